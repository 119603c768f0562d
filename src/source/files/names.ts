// Name and label syntax, as k8s.io/apimachinery/pkg/util/validation checks it. Each function
// returns undefined when the value is valid, else a short reason. Lengths are checked before
// any regular expression runs, so huge inputs cost nothing.

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME_PART = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

const DNS1123_LABEL_MAX = 63;
const DNS1123_SUBDOMAIN_MAX = 253;
const QUALIFIED_NAME_MAX = 63;
const LABEL_VALUE_MAX = 63;
const IANA_SVC_NAME_MAX = 15;

/** "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character" */
export function dns1123LabelProblem(s: string): string | undefined {
  if (s.length === 0) return 'must not be empty';
  if (s.length > DNS1123_LABEL_MAX) return `must be no more than ${DNS1123_LABEL_MAX} characters`;
  if (!DNS1123_LABEL.test(s)) {
    return "must be a DNS-1123 label: lower case letters, digits or '-', starting and ending with a letter or digit";
  }
  return undefined;
}

/** "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character" */
export function dns1123SubdomainProblem(s: string): string | undefined {
  if (s.length === 0) return 'must not be empty';
  if (s.length > DNS1123_SUBDOMAIN_MAX) return `must be no more than ${DNS1123_SUBDOMAIN_MAX} characters`;
  if (!DNS1123_SUBDOMAIN.test(s)) {
    return "must be a DNS-1123 subdomain: lower case letters, digits, '-' or '.', starting and ending with a letter or digit";
  }
  return undefined;
}

/**
 * A label key is a qualified name: "name part must consist of alphanumeric characters, '-', '_'
 * or '.', and must start and end with an alphanumeric character", at most 63 characters, with an
 * optional prefix that is a DNS subdomain followed by '/'.
 */
export function labelKeyProblem(s: string): string | undefined {
  const parts = s.split('/');
  if (parts.length > 2) return "a label key may contain at most one '/'";
  let name = s;
  if (parts.length === 2) {
    const prefix = parts[0] ?? '';
    name = parts[1] ?? '';
    if (prefix.length === 0) return 'the prefix before / must not be empty';
    const p = dns1123SubdomainProblem(prefix);
    if (p !== undefined) return `the prefix before / ${p}`;
  }
  if (name.length === 0) return 'the name part must not be empty';
  if (name.length > QUALIFIED_NAME_MAX) return `the name part must be no more than ${QUALIFIED_NAME_MAX} characters`;
  if (!QUALIFIED_NAME_PART.test(name)) {
    return "the name part must consist of letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
  }
  return undefined;
}

/** "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character" */
export function labelValueProblem(s: string): string | undefined {
  if (s.length > LABEL_VALUE_MAX) return `must be no more than ${LABEL_VALUE_MAX} characters`;
  if (!LABEL_VALUE.test(s)) {
    return "must be empty or consist of letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
  }
  return undefined;
}

/**
 * IANA_SVC_NAME (RFC 6335 section 5.1), used for named ports: at most 15 characters, lower case
 * letters, digits and '-', at least one letter, no leading/trailing '-' and no '--'.
 */
export function ianaSvcNameProblem(s: string): string | undefined {
  if (s.length === 0) return 'must not be empty';
  if (s.length > IANA_SVC_NAME_MAX) return `must be no more than ${IANA_SVC_NAME_MAX} characters`;
  if (!/^[-a-z0-9]+$/.test(s)) return "must contain only lower case letters, digits and '-'";
  if (!/[a-z]/.test(s)) return 'must contain at least one letter';
  if (s.startsWith('-') || s.endsWith('-')) return "must not begin or end with '-'";
  if (s.includes('--')) return "must not contain '--'";
  return undefined;
}

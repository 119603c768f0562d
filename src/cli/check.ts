// `netpold check`: decide one flow from manifests and say why.
import { compile } from '../policy/compile.js';
import { decideText, reportDecision, type DecisionReport, type SideReport } from '../policy/explain.js';
import { EXIT_DENIED, EXIT_INPUT, EXIT_OK, loadOrReport, parseFamily, parsePort, parseProtocol, pickAddresses, resolveEndpoint, type Io } from './common.js';

export interface CheckOptions {
  manifests: string[];
  from: string;
  to: string;
  port: string;
  protocol?: string;
  family?: string;
  json?: boolean;
  allowErrors?: boolean;
  node?: string;
}

export function runCheck(io: Io, o: CheckOptions): number {
  const protocol = parseProtocol(o.protocol);
  const port = parsePort(o.port);
  const family = parseFamily(o.family);
  const state = loadOrReport(io, o.manifests, o.allowErrors === true);
  if (!state) return EXIT_INPUT;
  const from = resolveEndpoint(state, o.from, '--from');
  const to = resolveEndpoint(state, o.to, '--to');
  const [srcIp, dstIp] = pickAddresses(from, to, family);
  const snap = compile(state, { localNode: o.node });
  const report = reportDecision(snap, decideText(snap, protocol, srcIp, dstIp, port));
  if (o.json) {
    io.out(JSON.stringify({
      verdict: report.verdict,
      from: { endpoint: from.label, ip: srcIp },
      to: { endpoint: to.label, ip: dstIp },
      protocol,
      port,
      egress: report.egress,
      ingress: report.ingress,
    }));
  } else {
    io.out(formatReport(report, `${from.label} (${srcIp})`, `${to.label} (${dstIp})`, `${protocol}/${port}`));
  }
  return report.verdict === 'allow' ? EXIT_OK : EXIT_DENIED;
}

export function formatReport(r: DecisionReport, from: string, to: string, what: string): string {
  const side = (name: string, s: SideReport): string => `  ${name.padEnd(8)}${s.pod ? `(${s.pod}) ` : ''}${s.text}`;
  return [`${r.verdict}  ${from} -> ${to} ${what}`, side('egress', r.egress), side('ingress', r.ingress)].join('\n');
}

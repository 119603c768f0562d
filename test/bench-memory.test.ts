// The pure parts of the memory benchmark (bench/procfs.ts): /proc parsing, the Prometheus text,
// per-flow arithmetic and the fd budget. No root, no lab: the benchmark itself runs with
// `npm run bench:memory` (root), see README "Benchmarks".
import { describe, expect, it } from 'vitest';
import { memoryConfigFromArgs } from '../bench/memory.js';
import {
  flowsThatFit,
  median,
  parseMeminfo,
  parseNofileLimit,
  parseProcStatus,
  parsePrometheus,
  parseSockstat,
  perFlow,
  promValue,
  slope,
  splitEven,
} from '../bench/procfs.js';

describe('memory benchmark: /proc parsing', () => {
  it('reads RSS and its parts from /proc/PID/status, in bytes', () => {
    const text = ['Name:\tnode', 'VmHWM:\t  120000 kB', 'VmRSS:\t  102400 kB', 'RssAnon:\t   60000 kB', 'RssFile:\t   42000 kB', 'RssShmem:\t     400 kB', 'Threads:\t11', ''].join('\n');
    const s = parseProcStatus(text);
    expect(s.vmRss).toBe(102_400 * 1024);
    expect(s.vmHwm).toBe(120_000 * 1024);
    expect(s.rssAnon + s.rssFile + s.rssShmem).toBe(s.vmRss);
    expect(s.threads).toBe(11);
    expect(parseProcStatus('').vmRss).toBe(0);
  });

  it('reads the open-files limit', () => {
    const text = 'Limit                     Soft Limit           Hard Limit           Units     \nMax open files            20000                20000                files     \n';
    expect(parseNofileLimit(text)).toEqual({ soft: 20_000, hard: 20_000 });
    expect(parseNofileLimit('Max open files unlimited unlimited files')).toEqual({ soft: Infinity, hard: Infinity });
    expect(parseNofileLimit('')).toBeUndefined();
  });

  it('reads sockstat and meminfo', () => {
    const s = parseSockstat('sockets: used 3276\nTCP: inuse 3273 orphan 1634 tw 13366 alloc 3275 mem 3481\nUDP: inuse 2 mem 1\nUDPLITE: inuse 0\n');
    expect(s).toEqual({ socketsUsed: 3276, tcpInuse: 3273, tcpOrphan: 1634, tcpTw: 13366, tcpAlloc: 3275, tcpMemPages: 3481, udpInuse: 2 });
    const m = parseMeminfo('MemTotal:       24742000 kB\nSlab:             152000 kB\nHugePages_Total:       0\n');
    expect(m['Slab']).toBe(152_000 * 1024);
    expect(m['HugePages_Total']).toBe(0);
  });
});

describe('memory benchmark: metrics and arithmetic', () => {
  it('sums Prometheus samples by name and labels', () => {
    const text = [
      '# HELP netpold_flows_active flows',
      '# TYPE netpold_flows_active gauge',
      'netpold_flows_active{protocol="tcp",verdict="allow"} 9000',
      'netpold_flows_active{protocol="tcp",verdict="audit"} 10',
      'netpold_flows_active{protocol="udp",verdict="allow"} 3',
      'nodejs_heap_size_used_bytes 16777216',
      'weird_label{a="x\\"y"} 1 1700000000000',
    ].join('\n');
    const s = parsePrometheus(text);
    expect(promValue(s, 'netpold_flows_active', { protocol: 'tcp' })).toBe(9010);
    expect(promValue(s, 'netpold_flows_active')).toBe(9013);
    expect(promValue(s, 'nodejs_heap_size_used_bytes')).toBe(16 * 2 ** 20);
    expect(promValue(s, 'weird_label', { a: 'x\\"y' })).toBe(1);
    expect(promValue(s, 'absent')).toBeUndefined();
  });

  it('computes per-flow figures, slopes and medians', () => {
    expect(perFlow(100 * 2 ** 20, 100 * 2 ** 20 + 51_200_000, 100_000)).toBe(512);
    expect(perFlow(5, 10, 0)).toBe(0);
    expect(slope([[0, 100], [1000, 600_100], [2000, 1_200_100]])).toBeCloseTo(600);
    expect(slope([[1, 5]])).toBe(0);
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
  });

  it('caps the flows by the open-files limit and splits them over processes', () => {
    expect(flowsThatFit(20_000, 36, 2, 512)).toBe(9_726);
    expect(flowsThatFit(Infinity, 36, 2, 512)).toBe(Number.MAX_SAFE_INTEGER);
    expect(flowsThatFit(1_000, 900, 2, 512)).toBe(0);
    expect(splitEven(10, 4)).toEqual([3, 3, 2, 2]);
    expect(splitEven(2, 4)).toEqual([1, 1]);
    expect(splitEven(100_000, 6).reduce((a, b) => a + b, 0)).toBe(100_000);
  });

  it('reads its options', () => {
    expect(memoryConfigFromArgs({}).flows).toBe(100_000);
    expect(memoryConfigFromArgs({ quick: true }).soakSeconds).toBe(20);
    expect(memoryConfigFromArgs({ flows: '100_000', soakSeconds: '120' })).toMatchObject({ flows: 100_000, soakSeconds: 120 });
    expect(memoryConfigFromArgs({ flows: '50' }).probeFlows).toBe(50);
    expect(() => memoryConfigFromArgs({ flows: 'x' })).toThrow(/--flows/);
    expect(() => memoryConfigFromArgs({ agentRelay: 'tcp' })).toThrow(/--agent-relay/);
  });
});

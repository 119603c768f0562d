// loadgen: the load generator and server of the flow benchmark (bench/flows.ts).
//
// One binary, one single-threaded epoll loop per invocation, one JSON object on stdout.
//
//   loadgen server   --addr IP --rr-ports LIST --bulk-ports LIST --udp-ports LIST [--req B] [--reply B] [--max-seconds S]
//       TCP request/reply on --rr-ports: reads B request bytes, writes the reply, then waits for the
//       client's FIN (the client closes first, so TIME_WAIT stays on the client) and closes.
//       TCP bulk on --bulk-ports: the first byte is a command, 'D' (the server sends until the
//       client closes) or 'U' (the server reads and discards until EOF).
//       UDP echo on --udp-ports (recvmmsg/sendmmsg batches).
//       Prints {"ready":true,...} once listening; exits on SIGTERM/SIGINT or after --max-seconds.
//       [--hold-ports LIST]: TCP connections held open (bench/memory.ts): reads and discards, sends
//       one byte 'h' after the first bytes (so the client knows the whole path works), and closes
//       only when the client does.
//   loadgen rate     --addr IP --ports LIST --conns N --duration S [--timeout-ms T] [--req B] [--reply B]
//       New TCP connections at the highest rate N parallel connections sustain: connect, send the
//       request, read the whole reply, close (client first); counts successes, errors, timeouts.
//   loadgen latency  --addr IP --ports LIST --rate R --duration S [--timeout-ms T]
//       The same transaction started at a fixed rate; connect (handshake) and first-reply latency.
//   loadgen stream   --addr IP --ports LIST --streams N --duration S [--warmup S] [--dir down|up] [--cpu-pids P,...]
//       N long TCP streams; throughput over the window after --warmup; /proc/stat and the given
//       processes' CPU ticks sampled at the window's start and end.
//   loadgen udpflows --addr IP --ports LIST --conns N --duration S --sport-lo A --sport-hi B [--timeout-ms T]
//       New UDP flows: each from a new source port (A..B, then the next destination port), one
//       request and its echo, then closed. When every (source port, destination port) pair has
//       been used, no flow starts any more and the window ends when the last one is done.
//   loadgen udpdgram --addr IP --ports LIST --flows N --window W --duration S [--warmup S] [--size B]
//       Datagrams on established UDP flows: W datagrams in flight per flow, echoed back.
//   loadgen hold     --addr IP --ports LIST --conns N --max-seconds S [--src-addrs LIST] [--concurrency C] [--timeout-ms T] [--req B]
//       N concurrent TCP connections to a server's --hold-ports (bench/memory.ts): at most C
//       connects in flight (default 512); each sends a B-byte request and is established once
//       the server's 'h' is read. Prints {"mode":"hold","established":E,...} when every
//       connection is established or failed, then holds them until SIGTERM/SIGINT, stdin closed,
//       or --max-seconds, closes them all (the client first) and prints {"closed":true,...}.
//       --src-addrs binds the connections round-robin to these local addresses (more 4-tuples).
//
// Every loop is bounded by time (and the per-connection timeout); --duration is at most 600 s.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 256
#define MAX_CONNS 65536
#define HOLD_MAX_CONNS 1000000
#define MAX_DURATION_S 600.0
#define BATCH 64
#define DGRAM_MAX 2048

// ---------------------------------------------------------------------------------------------
// utilities

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "loadgen: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static volatile sig_atomic_t stop_flag = 0;
static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

static long raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  return (long)rl.rlim_cur;
}

typedef struct {
  const char *mode;
  const char *addr;
  int ports[MAX_PORTS];
  int nports;
  int rr_ports[MAX_PORTS], nrr;
  int bulk_ports[MAX_PORTS], nbulk;
  int udp_ports[MAX_PORTS], nudp;
  int conns;
  int streams;
  int flows;
  int window;
  int size;
  double rate;
  double duration;
  double warmup;
  double max_seconds;
  int timeout_ms;
  int req;
  int reply;
  int sport_lo, sport_hi;
  int dir_up;
  int cpu_pids[16];
  int ncpu_pids;
  int hold_ports[MAX_PORTS], nhold;
  const char *src_addrs[16];
  int nsrc;
  int concurrency;
} opts_t;

static int parse_ports(const char *s, int *out, int max) {
  int n = 0;
  const char *p = s;
  while (*p) {
    char *end;
    long a = strtol(p, &end, 10), b = a;
    if (end == p) die("bad port list %s", s);
    p = end;
    if (*p == '-') {
      p++;
      b = strtol(p, &end, 10);
      if (end == p) die("bad port list %s", s);
      p = end;
    }
    if (a < 1 || b > 65535 || b < a) die("bad port range in %s", s);
    for (long x = a; x <= b; x++) {
      if (n >= max) die("too many ports in %s (at most %d)", s, max);
      out[n++] = (int)x;
    }
    if (*p == ',') p++;
    else if (*p) die("bad port list %s", s);
  }
  return n;
}

static double num_arg(const char *name, const char *v, double lo, double hi) {
  char *end;
  double x = strtod(v, &end);
  if (end == v || *end || !(x >= lo && x <= hi)) die("%s must be a number in [%g, %g], not %s", name, lo, hi, v);
  return x;
}

static void parse_args(int argc, char **argv, opts_t *o) {
  memset(o, 0, sizeof *o);
  o->conns = 64;
  o->streams = 1;
  o->flows = 4;
  o->window = 16;
  o->size = 64;
  o->rate = 500;
  o->duration = 2;
  o->warmup = -1;
  o->max_seconds = 3600;
  o->timeout_ms = 2000;
  o->req = 32;
  o->reply = 32;
  o->sport_lo = 20000;
  o->sport_hi = 60000;
  o->concurrency = 512;
  if (argc < 2) die("usage: loadgen server|rate|latency|stream|udpflows|udpdgram|hold --addr IP ...");
  o->mode = argv[1];
  for (int i = 2; i < argc; i++) {
    const char *k = argv[i];
    if (i + 1 >= argc) die("%s needs a value", k);
    const char *v = argv[++i];
    if (!strcmp(k, "--addr")) o->addr = v;
    else if (!strcmp(k, "--ports")) o->nports = parse_ports(v, o->ports, MAX_PORTS);
    else if (!strcmp(k, "--rr-ports")) o->nrr = parse_ports(v, o->rr_ports, MAX_PORTS);
    else if (!strcmp(k, "--bulk-ports")) o->nbulk = parse_ports(v, o->bulk_ports, MAX_PORTS);
    else if (!strcmp(k, "--udp-ports")) o->nudp = parse_ports(v, o->udp_ports, MAX_PORTS);
    else if (!strcmp(k, "--conns")) o->conns = (int)num_arg(k, v, 1, HOLD_MAX_CONNS);
    else if (!strcmp(k, "--hold-ports")) o->nhold = parse_ports(v, o->hold_ports, MAX_PORTS);
    else if (!strcmp(k, "--concurrency")) o->concurrency = (int)num_arg(k, v, 1, 65536);
    else if (!strcmp(k, "--src-addrs")) {
      // Split in place: the argv strings stay alive for the whole run.
      char *p = (char *)v;
      while (p && *p) {
        if (o->nsrc >= 16) die("--src-addrs: at most 16 addresses");
        o->src_addrs[o->nsrc++] = p;
        p = strchr(p, ',');
        if (p) *p++ = 0;
      }
    }
    else if (!strcmp(k, "--streams")) o->streams = (int)num_arg(k, v, 1, 1024);
    else if (!strcmp(k, "--flows")) o->flows = (int)num_arg(k, v, 1, 1024);
    else if (!strcmp(k, "--window")) o->window = (int)num_arg(k, v, 1, 4096);
    else if (!strcmp(k, "--size")) o->size = (int)num_arg(k, v, 1, DGRAM_MAX);
    else if (!strcmp(k, "--rate")) o->rate = num_arg(k, v, 1, 1e6);
    else if (!strcmp(k, "--duration")) o->duration = num_arg(k, v, 0.05, MAX_DURATION_S);
    else if (!strcmp(k, "--warmup")) o->warmup = num_arg(k, v, 0, 60);
    else if (!strcmp(k, "--max-seconds")) o->max_seconds = num_arg(k, v, 1, 86400);
    else if (!strcmp(k, "--timeout-ms")) o->timeout_ms = (int)num_arg(k, v, 1, 60000);
    else if (!strcmp(k, "--req")) o->req = (int)num_arg(k, v, 1, 4096);
    else if (!strcmp(k, "--reply")) o->reply = (int)num_arg(k, v, 1, 4096);
    else if (!strcmp(k, "--sport-lo")) o->sport_lo = (int)num_arg(k, v, 1024, 65535);
    else if (!strcmp(k, "--sport-hi")) o->sport_hi = (int)num_arg(k, v, 1024, 65535);
    else if (!strcmp(k, "--dir")) {
      if (!strcmp(v, "up")) o->dir_up = 1;
      else if (!strcmp(v, "down")) o->dir_up = 0;
      else die("--dir is up or down");
    } else if (!strcmp(k, "--cpu-pids")) {
      const char *p = v;
      while (*p && o->ncpu_pids < 16) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p || pid <= 0) die("bad --cpu-pids %s", v);
        o->cpu_pids[o->ncpu_pids++] = (int)pid;
        p = *end == ',' ? end + 1 : end;
      }
    } else die("unknown option %s", k);
  }
  if (!o->addr) die("--addr is required");
  // Only hold keeps its connections in a dynamically sized table; the others' stay bounded.
  if (strcmp(o->mode, "hold") != 0 && o->conns > MAX_CONNS) die("--conns is at most %d in mode %s", MAX_CONNS, o->mode);
  if (o->sport_hi < o->sport_lo) die("--sport-hi < --sport-lo");
}

static int make_addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof *a4;
    return AF_INET;
  }
  if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *len = sizeof *a6;
    return AF_INET6;
  }
  die("bad address %s", ip);
  return -1;
}

static void set_port(struct sockaddr_storage *ss, int port) {
  if (ss->ss_family == AF_INET) ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
  else ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static void any_addr(int family, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  if (family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    *len = sizeof *a;
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    *len = sizeof *a;
  }
}

// ---------------------------------------------------------------------------------------------
// latency histogram: 8 buckets per octave of microseconds, from 1 us to 2^26 us (~67 s)

#define HIST_SUB 8
#define HIST_OCT 27
#define HIST_N (HIST_SUB * HIST_OCT)
typedef struct {
  uint64_t b[HIST_N];
  uint64_t n;
  double max_us;
} hist_t;

static int hist_index(double us) {
  if (us < 1) return 0;
  int i = (int)floor(log2(us) * HIST_SUB);
  if (i >= HIST_N) i = HIST_N - 1;
  return i < 0 ? 0 : i;
}
static double hist_upper(int i) { return pow(2.0, (double)(i + 1) / HIST_SUB); }
static void hist_add(hist_t *h, double us) {
  h->b[hist_index(us)]++;
  h->n++;
  if (us > h->max_us) h->max_us = us;
}
static double hist_pct(const hist_t *h, double q) {
  if (h->n == 0) return 0;
  uint64_t want = (uint64_t)ceil(q * (double)h->n), acc = 0;
  if (want < 1) want = 1;
  for (int i = 0; i < HIST_N; i++) {
    acc += h->b[i];
    if (acc >= want) return hist_upper(i);
  }
  return h->max_us;
}
static void hist_json(const char *name, const hist_t *h) {
  printf("\"%s\":[", name);
  int first = 1;
  for (int i = 0; i < HIST_N; i++) {
    if (!h->b[i]) continue;
    printf("%s[%.2f,%llu]", first ? "" : ",", hist_upper(i), (unsigned long long)h->b[i]);
    first = 0;
  }
  printf("]");
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y ? 1 : 0;
}
/** Exact percentile of sorted samples (nearest rank). */
static double pct_sorted(const double *v, size_t n, double q) {
  if (n == 0) return 0;
  size_t k = (size_t)ceil(q * (double)n);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return v[k - 1];
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc (shared by every network namespace)

typedef struct {
  unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
  unsigned long long pid_ut[16], pid_st[16];
  int pid_ok[16];
} cpu_sample_t;

static void read_cpu(const opts_t *o, cpu_sample_t *s) {
  memset(s, 0, sizeof *s);
  FILE *f = fopen("/proc/stat", "r");
  if (f) {
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &s->user, &s->nice, &s->system, &s->idle, &s->iowait, &s->irq, &s->softirq, &s->steal) != 8) {
      memset(s, 0, sizeof *s);
    }
    fclose(f);
  }
  for (int i = 0; i < o->ncpu_pids; i++) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", o->cpu_pids[i]);
    FILE *g = fopen(path, "r");
    if (!g) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, g);
    fclose(g);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) continue;
    // fields after ") ": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15)
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2) {
      s->pid_ut[i] = ut;
      s->pid_st[i] = st;
      s->pid_ok[i] = 1;
    }
  }
}

static void cpu_json(const opts_t *o, const cpu_sample_t *a, const cpu_sample_t *b) {
  printf("\"cpu\":{\"ticksPerSec\":%ld,\"user\":%llu,\"nice\":%llu,\"system\":%llu,\"idle\":%llu,\"iowait\":%llu,\"irq\":%llu,\"softirq\":%llu,\"steal\":%llu,\"pids\":{",
         sysconf(_SC_CLK_TCK), b->user - a->user, b->nice - a->nice, b->system - a->system, b->idle - a->idle, b->iowait - a->iowait, b->irq - a->irq,
         b->softirq - a->softirq, b->steal - a->steal);
  int first = 1;
  for (int i = 0; i < o->ncpu_pids; i++) {
    if (!a->pid_ok[i] || !b->pid_ok[i]) continue;
    printf("%s\"%d\":{\"utime\":%llu,\"stime\":%llu}", first ? "" : ",", o->cpu_pids[i], b->pid_ut[i] - a->pid_ut[i], b->pid_st[i] - a->pid_st[i]);
    first = 0;
  }
  printf("}}");
}

// ---------------------------------------------------------------------------------------------
// server

enum { K_NONE = 0, K_LRR, K_LBULK, K_RR, K_BULK, K_UDP, K_LHOLD, K_HOLD };
typedef struct {
  uint8_t kind;
  uint8_t state; // RR: 1 replied; BULK: 0 waiting command, 'D' source, 'U' sink
  uint32_t got;
} sconn_t;

static char bulk_buf[1 << 18];

static int listen_tcp(int family, const char *ip, int port) {
  struct sockaddr_storage ss;
  socklen_t len;
  make_addr(ip, port, &ss, &len);
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, len) != 0) die("bind %s:%d: %s", ip, port, strerror(errno));
  if (listen(fd, 65535) != 0) die("listen %s:%d: %s", ip, port, strerror(errno));
  return fd;
}

static int bind_udp(int family, const char *ip, int port) {
  struct sockaddr_storage ss;
  socklen_t len;
  make_addr(ip, port, &ss, &len);
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket: %s", strerror(errno));
  int sz = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  if (bind(fd, (struct sockaddr *)&ss, len) != 0) die("bind udp %s:%d: %s", ip, port, strerror(errno));
  return fd;
}

static int run_server(const opts_t *o) {
  long maxfd = raise_nofile();
  sconn_t *conns = calloc((size_t)maxfd, sizeof *conns);
  if (!conns) die("out of memory");
  struct sockaddr_storage probe;
  socklen_t plen;
  int family = make_addr(o->addr, 1, &probe, &plen);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev;
  int nlisten = 0;
  for (int i = 0; i < o->nrr + o->nbulk; i++) {
    int bulk = i >= o->nrr;
    int fd = listen_tcp(family, o->addr, bulk ? o->bulk_ports[i - o->nrr] : o->rr_ports[i]);
    if (fd >= maxfd) die("fd limit");
    conns[fd].kind = bulk ? K_LBULK : K_LRR;
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    nlisten++;
  }
  for (int i = 0; i < o->nhold; i++) {
    int fd = listen_tcp(family, o->addr, o->hold_ports[i]);
    if (fd >= maxfd) die("fd limit");
    conns[fd].kind = K_LHOLD;
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    nlisten++;
  }
  for (int i = 0; i < o->nudp; i++) {
    int fd = bind_udp(family, o->addr, o->udp_ports[i]);
    if (fd >= maxfd) die("fd limit");
    conns[fd].kind = K_UDP;
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  for (int i = 0; i < (int)sizeof bulk_buf; i++) bulk_buf[i] = (char)(i * 7 + (i >> 11));
  char reply[4096];
  memset(reply, 'r', sizeof reply);
  char rbuf[65536];

  struct mmsghdr msgs[BATCH];
  struct iovec iovs[BATCH];
  struct sockaddr_storage names[BATCH];
  static char dgrams[BATCH][DGRAM_MAX];

  unsigned long long accepted = 0, replied = 0, udp_echoed = 0, bulk_bytes_out = 0, bulk_bytes_in = 0, errors = 0;
  unsigned long long holding = 0, held_max = 0;
  printf("{\"ready\":true,\"pid\":%d,\"listeners\":%d,\"udp\":%d,\"hold\":%d,\"maxfd\":%ld}\n", getpid(), nlisten, o->nudp, o->nhold, maxfd);
  fflush(stdout);

  uint64_t end = now_ns() + (uint64_t)(o->max_seconds * 1e9);
  struct epoll_event evs[256];
  while (!stop_flag && now_ns() < end) {
    int n = epoll_wait(ep, evs, 256, 200);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      uint32_t e = evs[i].events;
      sconn_t *c = &conns[fd];
      switch (c->kind) {
      case K_LRR:
      case K_LBULK:
      case K_LHOLD:
        for (int k = 0; k < 256; k++) {
          int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (cfd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) errors++;
            break;
          }
          if (cfd >= maxfd) {
            close(cfd);
            errors++;
            continue;
          }
          accepted++;
          conns[cfd].kind = c->kind == K_LRR ? K_RR : c->kind == K_LHOLD ? K_HOLD : K_BULK;
          if (c->kind == K_LHOLD && ++holding > held_max) held_max = holding;
          conns[cfd].state = 0;
          conns[cfd].got = 0;
          ev.events = EPOLLIN | EPOLLRDHUP;
          ev.data.fd = cfd;
          epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
        }
        break;
      case K_RR: {
        int closeit = 0;
        for (int k = 0; k < 16; k++) {
          ssize_t r = recv(fd, rbuf, sizeof rbuf, 0);
          if (r > 0) {
            c->got += (uint32_t)r;
            if (!c->state && c->got >= (uint32_t)o->req) {
              if (send(fd, reply, (size_t)o->reply, MSG_NOSIGNAL) != o->reply) {
                errors++;
                closeit = 1;
                break;
              }
              c->state = 1;
              replied++;
            }
            continue;
          }
          if (r == 0) closeit = 1; // the client's FIN (after the reply, normally)
          else if (errno != EAGAIN && errno != EWOULDBLOCK) closeit = 1;
          break;
        }
        if (closeit || (e & (EPOLLERR | EPOLLHUP))) {
          c->kind = K_NONE;
          close(fd);
        }
        break;
      }
      case K_BULK: {
        int closeit = (e & (EPOLLERR | EPOLLHUP)) != 0;
        if (!closeit && (e & (EPOLLIN | EPOLLRDHUP))) {
          for (int k = 0; k < 64; k++) {
            ssize_t r = recv(fd, rbuf, sizeof rbuf, 0);
            if (r > 0) {
              if (c->state == 0) {
                c->state = (uint8_t)rbuf[0];
                if (c->state == 'D') {
                  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
                  ev.data.fd = fd;
                  epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
                } else if (c->state != 'U') {
                  closeit = 1;
                  break;
                }
                r -= 1;
              }
              bulk_bytes_in += (unsigned long long)r;
              continue;
            }
            if (r == 0) closeit = 1;
            else if (errno != EAGAIN && errno != EWOULDBLOCK) closeit = 1;
            break;
          }
        }
        if (!closeit && c->state == 'D' && (e & EPOLLOUT)) {
          for (int k = 0; k < 64; k++) {
            ssize_t w = send(fd, bulk_buf, sizeof bulk_buf, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
              bulk_bytes_out += (unsigned long long)w;
              continue;
            }
            if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) closeit = 1;
            break;
          }
        }
        if (closeit) {
          c->kind = K_NONE;
          close(fd);
        }
        break;
      }
      case K_HOLD: {
        // Held open: read and discard; 'h' once after the first bytes; close only on the
        // client's FIN (or an error).
        int closeit = (e & (EPOLLERR | EPOLLHUP)) != 0;
        for (int k = 0; !closeit && k < 16; k++) {
          ssize_t r = recv(fd, rbuf, sizeof rbuf, 0);
          if (r > 0) {
            if (!c->state) {
              if (send(fd, "h", 1, MSG_NOSIGNAL) != 1) {
                errors++;
                closeit = 1;
                break;
              }
              c->state = 1;
              replied++;
            }
            continue;
          }
          if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) closeit = 1;
          break;
        }
        if (closeit) {
          c->kind = K_NONE;
          holding--;
          close(fd);
        }
        break;
      }
      case K_UDP:
        for (int round = 0; round < 64; round++) {
          for (int k = 0; k < BATCH; k++) {
            iovs[k].iov_base = dgrams[k];
            iovs[k].iov_len = DGRAM_MAX;
            memset(&msgs[k].msg_hdr, 0, sizeof msgs[k].msg_hdr);
            msgs[k].msg_hdr.msg_iov = &iovs[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            msgs[k].msg_hdr.msg_name = &names[k];
            msgs[k].msg_hdr.msg_namelen = sizeof names[k];
          }
          int got = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
          if (got <= 0) break;
          for (int k = 0; k < got; k++) iovs[k].iov_len = msgs[k].msg_len;
          int sent = 0;
          for (int tries = 0; sent < got && tries < 8; tries++) {
            int s = sendmmsg(fd, msgs + sent, (unsigned)(got - sent), MSG_DONTWAIT);
            if (s <= 0) break;
            sent += s;
          }
          udp_echoed += (unsigned long long)sent;
          if (got < BATCH) break;
        }
        break;
      default:
        break; // a stale event of a connection closed earlier in this batch
      }
    }
  }
  printf("{\"stopped\":true,\"accepted\":%llu,\"replied\":%llu,\"udpEchoed\":%llu,\"bulkBytesOut\":%llu,\"bulkBytesIn\":%llu,\"errors\":%llu,\"holding\":%llu,\"heldMax\":%llu}\n", accepted, replied,
         udp_echoed, bulk_bytes_out, bulk_bytes_in, errors, holding, held_max);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// TCP transactions: rate and latency

enum { S_IDLE = 0, S_CONNECTING, S_READING };
typedef struct {
  int fd;
  int state;
  uint64_t t0;
  uint64_t deadline;
  uint32_t got;
} slot_t;

typedef struct {
  unsigned long long ok, timeouts, refused, reset, eof, addrnotavail, other, started, late_ok;
} tcp_counts_t;

static void count_err(tcp_counts_t *c, int err) {
  switch (err) {
  case ECONNREFUSED: c->refused++; break;
  case ECONNRESET:
  case EPIPE: c->reset++; break;
  case EADDRNOTAVAIL:
  case EADDRINUSE: c->addrnotavail++; break;
  default: c->other++; break;
  }
}

typedef struct {
  const opts_t *o;
  int ep;
  slot_t *slots;
  int nslots;
  struct sockaddr_storage dst;
  socklen_t dstlen;
  int family;
  unsigned long long seq;
  char req[4096];
  char buf[8192];
} txn_t;

static void slot_close(txn_t *t, slot_t *s) {
  (void)t;
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  s->state = S_IDLE;
}

/** Starts a transaction on slot i; returns 0, or -1 when it failed at once (counted). */
static int slot_start(txn_t *t, int i, tcp_counts_t *c) {
  slot_t *s = &t->slots[i];
  int port = t->o->ports[t->seq++ % (unsigned long long)t->o->nports];
  set_port(&t->dst, port);
  c->started++;
  int fd = socket(t->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    count_err(c, errno);
    return -1;
  }
  s->t0 = now_ns();
  s->deadline = s->t0 + (uint64_t)t->o->timeout_ms * 1000000ull;
  s->got = 0;
  s->fd = fd;
  int r = connect(fd, (struct sockaddr *)&t->dst, t->dstlen);
  if (r != 0 && errno != EINPROGRESS) {
    count_err(c, errno);
    slot_close(t, s);
    return -1;
  }
  s->state = S_CONNECTING;
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
  epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev);
  return 0;
}

/**
 * Handles an event on slot i. Returns 1 when the transaction completed (reply read, closed),
 * -1 when it failed (counted, closed), 0 when it goes on. Sets *connect_us when the handshake
 * completed in this call.
 */
static int slot_event(txn_t *t, int i, uint32_t e, tcp_counts_t *c, double *connect_us) {
  slot_t *s = &t->slots[i];
  if (s->state == S_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err) {
      count_err(c, err);
      slot_close(t, s);
      return -1;
    }
    if (!(e & (EPOLLOUT | EPOLLIN))) return 0;
    *connect_us = (double)(now_ns() - s->t0) / 1e3;
    if (send(s->fd, t->req, (size_t)t->o->req, MSG_NOSIGNAL) != t->o->req) {
      count_err(c, errno ? errno : EPIPE);
      slot_close(t, s);
      return -1;
    }
    s->state = S_READING;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(t->ep, EPOLL_CTL_MOD, s->fd, &ev);
    return 0;
  }
  if (s->state != S_READING) return 0;
  for (int k = 0; k < 8; k++) {
    ssize_t r = recv(s->fd, t->buf, sizeof t->buf, 0);
    if (r > 0) {
      s->got += (uint32_t)r;
      if (s->got >= (uint32_t)t->o->reply) {
        slot_close(t, s); // the client closes first
        return 1;
      }
      continue;
    }
    if (r == 0) {
      c->eof++;
      slot_close(t, s);
      return -1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    count_err(c, errno);
    slot_close(t, s);
    return -1;
  }
  return 0;
}

static void txn_init(txn_t *t, const opts_t *o, int nslots) {
  memset(t, 0, sizeof *t);
  t->o = o;
  if (o->nports == 0) die("--ports is required");
  t->family = make_addr(o->addr, o->ports[0], &t->dst, &t->dstlen);
  t->ep = epoll_create1(EPOLL_CLOEXEC);
  t->nslots = nslots;
  t->slots = calloc((size_t)nslots, sizeof *t->slots);
  if (!t->slots) die("out of memory");
  for (int i = 0; i < nslots; i++) t->slots[i].fd = -1;
  memset(t->req, 'q', sizeof t->req);
}

static void counts_json(const tcp_counts_t *c) {
  unsigned long long errors = c->refused + c->reset + c->eof + c->addrnotavail + c->other;
  printf("\"ok\":%llu,\"started\":%llu,\"errors\":%llu,\"timeouts\":%llu,\"errorKinds\":{\"refused\":%llu,\"reset\":%llu,\"eof\":%llu,\"addrNotAvail\":%llu,\"other\":%llu}", c->ok,
         c->started, errors, c->timeouts, c->refused, c->reset, c->eof, c->addrnotavail, c->other);
}

static void check_timeouts(txn_t *t, tcp_counts_t *c, uint64_t now, int *active) {
  for (int i = 0; i < t->nslots; i++) {
    slot_t *s = &t->slots[i];
    if (s->state != S_IDLE && now > s->deadline) {
      c->timeouts++;
      slot_close(t, s);
      (*active)--;
    }
  }
}

static int run_rate(const opts_t *o) {
  raise_nofile();
  txn_t t;
  txn_init(&t, o, o->conns);
  tcp_counts_t c = {0};
  hist_t h = {0};
  struct epoll_event evs[1024];
  uint64_t start = now_ns(), end = start + (uint64_t)(o->duration * 1e9);
  uint64_t hard = end + (uint64_t)o->timeout_ms * 1000000ull + 500000000ull;
  int active = 0;
  for (int i = 0; i < t.nslots; i++)
    if (slot_start(&t, i, &c) == 0) active++;
  uint64_t last_scan = start;
  for (;;) {
    uint64_t now = now_ns();
    if (now >= end && active == 0) break;
    if (now >= hard || stop_flag) break;
    int n = epoll_wait(t.ep, evs, 1024, 5);
    now = now_ns();
    for (int k = 0; k < n; k++) {
      int i = (int)evs[k].data.u32;
      double cus = -1;
      uint64_t t0 = t.slots[i].t0;
      int r = slot_event(&t, i, evs[k].events, &c, &cus);
      if (r == 0) continue;
      active--;
      if (r == 1) {
        uint64_t done = now_ns();
        if (done <= end) {
          c.ok++;
          hist_add(&h, (double)(done - t0) / 1e3);
        } else c.late_ok++;
      }
    }
    // Restart idle slots while the run lasts (also ones that failed at once).
    if (now < end) {
      for (int i = 0; i < t.nslots; i++) {
        if (t.slots[i].state != S_IDLE) continue;
        if (slot_start(&t, i, &c) == 0) active++;
      }
    }
    if (now - last_scan > 10000000ull) {
      check_timeouts(&t, &c, now, &active);
      last_scan = now;
    }
  }
  // Whatever is still in flight at the hard stop counts as a timeout.
  for (int i = 0; i < t.nslots; i++)
    if (t.slots[i].state != S_IDLE) {
      c.timeouts++;
      slot_close(&t, &t.slots[i]);
    }
  double secs = o->duration;
  printf("{\"mode\":\"rate\",\"durationS\":%.3f,\"conns\":%d,\"connPerSec\":%.1f,", secs, o->conns, (double)c.ok / secs);
  counts_json(&c);
  printf(",\"lateOk\":%llu,\"txnP50Us\":%.1f,\"txnP99Us\":%.1f,", c.late_ok, hist_pct(&h, 0.5), hist_pct(&h, 0.99));
  hist_json("txnHist", &h);
  printf("}\n");
  return 0;
}

static int run_latency(const opts_t *o) {
  raise_nofile();
  double want = o->rate * o->timeout_ms / 1000.0 * 1.5 + 64;
  int nslots = want > 16384 ? 16384 : (int)want;
  txn_t t;
  txn_init(&t, o, nslots);
  tcp_counts_t c = {0};
  hist_t hc = {0}, hr = {0};
  size_t cap = (size_t)(o->rate * o->duration) + 1024;
  if (cap > 4000000) cap = 4000000;
  double *cs = malloc(cap * sizeof *cs), *rs = malloc(cap * sizeof *rs);
  if (!cs || !rs) die("out of memory");
  size_t ncs = 0, nrs = 0;
  unsigned long long skipped = 0;
  struct epoll_event evs[1024];
  uint64_t start = now_ns(), end = start + (uint64_t)(o->duration * 1e9);
  uint64_t hard = end + (uint64_t)o->timeout_ms * 1000000ull + 500000000ull;
  double interval = 1e9 / o->rate;
  double next = (double)start;
  int active = 0, cursor = 0;
  uint64_t last_scan = start;
  for (;;) {
    uint64_t now = now_ns();
    if (now >= end && active == 0) break;
    if (now >= hard || stop_flag) break;
    for (int guard = 0; next <= (double)now && next < (double)end && guard < 100000; guard++) {
      next += interval;
      int found = -1;
      for (int k = 0; k < t.nslots; k++) {
        int i = (cursor + k) % t.nslots;
        if (t.slots[i].state == S_IDLE) {
          found = i;
          break;
        }
      }
      if (found < 0) {
        skipped++;
        continue;
      }
      cursor = (found + 1) % t.nslots;
      if (slot_start(&t, found, &c) == 0) active++;
    }
    int wait_ms = 5;
    if (next < (double)end && next > (double)now) {
      double ms = ceil((next - (double)now) / 1e6);
      if (ms < wait_ms) wait_ms = (int)ms;
    } else if (next <= (double)now && next < (double)end) wait_ms = 0;
    int n = epoll_wait(t.ep, evs, 1024, wait_ms);
    for (int k = 0; k < n; k++) {
      int i = (int)evs[k].data.u32;
      double cus = -1;
      uint64_t t0 = t.slots[i].t0;
      int r = slot_event(&t, i, evs[k].events, &c, &cus);
      if (cus >= 0) {
        hist_add(&hc, cus);
        if (ncs < cap) cs[ncs++] = cus;
      }
      if (r == 0) continue;
      active--;
      if (r == 1) {
        double us = (double)(now_ns() - t0) / 1e3;
        c.ok++;
        hist_add(&hr, us);
        if (nrs < cap) rs[nrs++] = us;
      }
    }
    now = now_ns();
    if (now - last_scan > 10000000ull) {
      check_timeouts(&t, &c, now, &active);
      last_scan = now;
    }
  }
  for (int i = 0; i < t.nslots; i++)
    if (t.slots[i].state != S_IDLE) {
      c.timeouts++;
      slot_close(&t, &t.slots[i]);
    }
  qsort(cs, ncs, sizeof *cs, cmp_double);
  qsort(rs, nrs, sizeof *rs, cmp_double);
  printf("{\"mode\":\"latency\",\"durationS\":%.3f,\"rate\":%.1f,", o->duration, o->rate);
  counts_json(&c);
  printf(",\"skipped\":%llu,\"connectP50Us\":%.1f,\"connectP90Us\":%.1f,\"connectP99Us\":%.1f,\"connectMaxUs\":%.1f,", skipped, pct_sorted(cs, ncs, 0.5), pct_sorted(cs, ncs, 0.9),
         pct_sorted(cs, ncs, 0.99), ncs ? cs[ncs - 1] : 0.0);
  printf("\"firstReplyP50Us\":%.1f,\"firstReplyP90Us\":%.1f,\"firstReplyP99Us\":%.1f,\"firstReplyMaxUs\":%.1f,", pct_sorted(rs, nrs, 0.5), pct_sorted(rs, nrs, 0.9),
         pct_sorted(rs, nrs, 0.99), nrs ? rs[nrs - 1] : 0.0);
  hist_json("connectHist", &hc);
  printf(",");
  hist_json("firstReplyHist", &hr);
  printf("}\n");
  free(cs);
  free(rs);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// bulk streams

static char stream_buf[1 << 20];

static int run_stream(const opts_t *o) {
  raise_nofile();
  if (o->nports == 0) die("--ports is required");
  int n = o->streams;
  int *fds = calloc((size_t)n, sizeof *fds);
  int *ready = calloc((size_t)n, sizeof *ready);
  unsigned long long *bytes = calloc((size_t)n, sizeof *bytes);
  if (!fds || !ready || !bytes) die("out of memory");
  struct sockaddr_storage dst;
  socklen_t dstlen;
  int family = make_addr(o->addr, o->ports[0], &dst, &dstlen);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  unsigned long long errors = 0;
  int alive = 0;
  for (int i = 0; i < n; i++) {
    set_port(&dst, o->ports[i % o->nports]);
    fds[i] = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fds[i] < 0) die("socket: %s", strerror(errno));
    if (connect(fds[i], (struct sockaddr *)&dst, dstlen) != 0 && errno != EINPROGRESS) {
      errors++;
      close(fds[i]);
      fds[i] = -1;
      continue;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    alive++;
  }
  double warm = o->warmup >= 0 ? o->warmup : (o->duration * 0.2 < 0.5 ? o->duration * 0.2 : 0.5);
  uint64_t start = now_ns(), tw = start + (uint64_t)(warm * 1e9), te = tw + (uint64_t)(o->duration * 1e9);
  uint64_t connect_deadline = start + (uint64_t)o->timeout_ms * 1000000ull;
  uint64_t tw_actual = 0, te_actual = 0;
  unsigned long long total = 0, total_w = 0, total_e = 0;
  cpu_sample_t ca, cb;
  int have_w = 0;
  struct epoll_event evs[256];
  char cmd = o->dir_up ? 'U' : 'D';
  for (int i = 0; i < o->size && i < (int)sizeof stream_buf; i++) stream_buf[i] = (char)i;
  while (alive > 0 && !stop_flag) {
    uint64_t now = now_ns();
    if (!have_w && now >= tw) {
      read_cpu(o, &ca);
      tw_actual = now_ns();
      total_w = total;
      have_w = 1;
    }
    if (now >= te) break;
    if (now >= connect_deadline) {
      for (int i = 0; i < n; i++)
        if (fds[i] >= 0 && !ready[i]) {
          errors++;
          close(fds[i]);
          fds[i] = -1;
          alive--;
        }
    }
    int k = epoll_wait(ep, evs, 256, 5);
    for (int j = 0; j < k; j++) {
      int i = (int)evs[j].data.u32;
      int fd = fds[i];
      if (fd < 0) continue;
      int bad = 0;
      if (!ready[i]) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || send(fd, &cmd, 1, MSG_NOSIGNAL) != 1) bad = 1;
        else {
          ready[i] = 1;
          struct epoll_event ev = {.events = o->dir_up ? EPOLLOUT : EPOLLIN, .data.u32 = (uint32_t)i};
          epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        }
      } else if (!o->dir_up) {
        for (int r = 0; r < 16; r++) {
          ssize_t got = recv(fd, stream_buf, sizeof stream_buf, MSG_DONTWAIT);
          if (got > 0) {
            bytes[i] += (unsigned long long)got;
            total += (unsigned long long)got;
            continue;
          }
          if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) bad = 1;
          break;
        }
      } else {
        for (int r = 0; r < 16; r++) {
          ssize_t w = send(fd, stream_buf, sizeof stream_buf, MSG_DONTWAIT | MSG_NOSIGNAL);
          if (w > 0) {
            bytes[i] += (unsigned long long)w;
            total += (unsigned long long)w;
            continue;
          }
          if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) bad = 1;
          break;
        }
      }
      if (bad) {
        errors++;
        close(fd);
        fds[i] = -1;
        alive--;
      }
    }
  }
  te_actual = now_ns();
  read_cpu(o, &cb);
  total_e = total;
  if (!have_w) {
    ca = cb;
    tw_actual = te_actual;
    total_w = total_e;
  }
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) close(fds[i]); // the client closes first
  double secs = (double)(te_actual - tw_actual) / 1e9;
  unsigned long long measured = total_e - total_w;
  printf("{\"mode\":\"stream\",\"selfPid\":%d,\"dir\":\"%s\",\"streams\":%d,\"durationS\":%.3f,\"warmupS\":%.3f,\"bytes\":%llu,\"gbps\":%.3f,\"errors\":%llu,\"perStreamBytes\":[", getpid(), o->dir_up ? "up" : "down", n,
         secs, warm, measured, secs > 0 ? (double)measured * 8 / secs / 1e9 : 0.0, errors);
  for (int i = 0; i < n; i++) printf("%s%llu", i ? "," : "", bytes[i]);
  printf("],");
  cpu_json(o, &ca, &cb);
  printf("}\n");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// UDP

static int run_udpflows(const opts_t *o) {
  raise_nofile();
  if (o->nports == 0) die("--ports is required");
  struct sockaddr_storage dst, src;
  socklen_t dstlen, srclen;
  int family = make_addr(o->addr, o->ports[0], &dst, &dstlen);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int n = o->conns;
  slot_t *slots = calloc((size_t)n, sizeof *slots);
  if (!slots) die("out of memory");
  for (int i = 0; i < n; i++) slots[i].fd = -1;
  unsigned long long range = (unsigned long long)(o->sport_hi - o->sport_lo + 1), next = 0, limit = range * (unsigned long long)o->nports;
  unsigned long long ok = 0, late = 0, timeouts = 0, errs = 0, bindfail = 0, started = 0;
  int exhausted = 0;
  hist_t h = {0};
  char req[4096], buf[4096];
  memset(req, 'u', sizeof req);
  struct epoll_event evs[1024];
  uint64_t start = now_ns(), end = start + (uint64_t)(o->duration * 1e9);
  uint64_t hard = end + (uint64_t)o->timeout_ms * 1000000ull + 500000000ull, last_scan = start;
  int active = 0;
  // When the source ports run out before the duration, the window ends once the last flow is done.
  uint64_t window_end = end;
  for (;;) {
    uint64_t now = now_ns();
    if (now >= end && active == 0) break;
    if (exhausted && active == 0) {
      if (now < window_end) window_end = now;
      break;
    }
    if (now >= hard || stop_flag) break;
    if (now < end && !exhausted) {
      for (int i = 0; i < n; i++) {
        if (slots[i].state != S_IDLE) continue;
        int fd = -1;
        for (int tries = 0; tries < 64 && fd < 0; tries++) {
          if (next >= limit) {
            exhausted = 1;
            break;
          }
          int sport = o->sport_lo + (int)(next % range);
          int dport = o->ports[next / range];
          next++;
          fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
          if (fd < 0) {
            errs++;
            break;
          }
          any_addr(family, sport, &src, &srclen);
          if (bind(fd, (struct sockaddr *)&src, srclen) != 0) {
            bindfail++;
            close(fd);
            fd = -1;
            continue;
          }
          set_port(&dst, dport);
          started++;
          if (connect(fd, (struct sockaddr *)&dst, dstlen) != 0 || send(fd, req, (size_t)o->req, 0) != o->req) {
            errs++;
            close(fd);
            fd = -1;
            continue;
          }
        }
        if (fd < 0) {
          if (exhausted) break;
          continue;
        }
        slots[i].fd = fd;
        slots[i].state = S_READING;
        slots[i].t0 = now_ns();
        slots[i].deadline = slots[i].t0 + (uint64_t)o->timeout_ms * 1000000ull;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        active++;
      }
    }
    int k = epoll_wait(ep, evs, 1024, 5);
    for (int j = 0; j < k; j++) {
      int i = (int)evs[j].data.u32;
      slot_t *s = &slots[i];
      if (s->state == S_IDLE) continue;
      ssize_t r = recv(s->fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      uint64_t done = now_ns();
      if (r >= 0) {
        if (done <= end) {
          ok++;
          hist_add(&h, (double)(done - s->t0) / 1e3);
        } else late++;
      } else errs++;
      close(s->fd);
      s->fd = -1;
      s->state = S_IDLE;
      active--;
    }
    now = now_ns();
    if (now - last_scan > 10000000ull) {
      for (int i = 0; i < n; i++)
        if (slots[i].state != S_IDLE && now > slots[i].deadline) {
          timeouts++;
          close(slots[i].fd);
          slots[i].fd = -1;
          slots[i].state = S_IDLE;
          active--;
        }
      last_scan = now;
    }
  }
  for (int i = 0; i < n; i++)
    if (slots[i].state != S_IDLE) {
      timeouts++;
      close(slots[i].fd);
    }
  double secs = (double)(window_end - start) / 1e9;
  if (secs <= 0) secs = o->duration;
  printf("{\"mode\":\"udpflows\",\"durationS\":%.3f,\"conns\":%d,\"udpFlowsPerSec\":%.1f,\"ok\":%llu,\"started\":%llu,\"lateOk\":%llu,\"timeouts\":%llu,\"errors\":%llu,\"bindFailures\":%llu,\"exhausted\":%s,\"p50Us\":%.1f,\"p99Us\":%.1f,",
         secs, n, (double)ok / secs, ok, started, late, timeouts, errs, bindfail, exhausted ? "true" : "false", hist_pct(&h, 0.5), hist_pct(&h, 0.99));
  hist_json("hist", &h);
  printf("}\n");
  return 0;
}

static int run_udpdgram(const opts_t *o) {
  raise_nofile();
  if (o->nports == 0) die("--ports is required");
  struct sockaddr_storage dst;
  socklen_t dstlen;
  int family = make_addr(o->addr, o->ports[0], &dst, &dstlen);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int n = o->flows;
  int *fds = calloc((size_t)n, sizeof *fds);
  uint64_t *last_rx = calloc((size_t)n, sizeof *last_rx);
  if (!fds || !last_rx) die("out of memory");
  static char bufs[BATCH][DGRAM_MAX];
  struct mmsghdr msgs[BATCH];
  struct iovec iovs[BATCH];
  unsigned long long rx = 0, tx = 0, refills = 0, errs = 0;
  uint64_t start = now_ns();
  for (int i = 0; i < n; i++) {
    set_port(&dst, o->ports[i % o->nports]);
    fds[i] = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fds[i] < 0) die("socket: %s", strerror(errno));
    int sz = 4 << 20;
    setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    if (connect(fds[i], (struct sockaddr *)&dst, dstlen) != 0) die("connect: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    for (int w = 0; w < o->window; w++)
      if (send(fds[i], bufs[0], (size_t)o->size, 0) == o->size) tx++;
    last_rx[i] = start;
  }
  double warm = o->warmup >= 0 ? o->warmup : (o->duration * 0.2 < 0.5 ? o->duration * 0.2 : 0.5);
  uint64_t tw = start + (uint64_t)(warm * 1e9), te = tw + (uint64_t)(o->duration * 1e9), tw_actual = 0, te_actual, last_scan = start;
  unsigned long long rx_w = 0;
  int have_w = 0;
  cpu_sample_t ca, cb;
  struct epoll_event evs[256];
  while (!stop_flag) {
    uint64_t now = now_ns();
    if (!have_w && now >= tw) {
      read_cpu(o, &ca);
      tw_actual = now_ns();
      rx_w = rx;
      have_w = 1;
    }
    if (now >= te) break;
    int k = epoll_wait(ep, evs, 256, 5);
    now = now_ns();
    for (int j = 0; j < k; j++) {
      int i = (int)evs[j].data.u32;
      for (int round = 0; round < 16; round++) {
        for (int b = 0; b < BATCH; b++) {
          iovs[b].iov_base = bufs[b];
          iovs[b].iov_len = DGRAM_MAX;
          memset(&msgs[b].msg_hdr, 0, sizeof msgs[b].msg_hdr);
          msgs[b].msg_hdr.msg_iov = &iovs[b];
          msgs[b].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(fds[i], msgs, BATCH, MSG_DONTWAIT, NULL);
        if (got <= 0) {
          if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK) errs++;
          break;
        }
        rx += (unsigned long long)got;
        last_rx[i] = now;
        for (int b = 0; b < got; b++) iovs[b].iov_len = (size_t)o->size;
        int sent = sendmmsg(fds[i], msgs, (unsigned)got, MSG_DONTWAIT);
        if (sent > 0) tx += (unsigned long long)sent;
        if (got < BATCH) break;
      }
    }
    if (now - last_scan > 50000000ull) {
      for (int i = 0; i < n; i++)
        if (now - last_rx[i] > 200000000ull) {
          refills++;
          for (int w = 0; w < o->window; w++)
            if (send(fds[i], bufs[0], (size_t)o->size, MSG_DONTWAIT) == o->size) tx++;
          last_rx[i] = now;
        }
      last_scan = now;
    }
  }
  te_actual = now_ns();
  read_cpu(o, &cb);
  if (!have_w) {
    ca = cb;
    tw_actual = te_actual;
    rx_w = rx;
  }
  for (int i = 0; i < n; i++) close(fds[i]);
  double secs = (double)(te_actual - tw_actual) / 1e9;
  printf("{\"mode\":\"udpdgram\",\"selfPid\":%d,\"flows\":%d,\"window\":%d,\"size\":%d,\"durationS\":%.3f,\"received\":%llu,\"udpDgramsPerSec\":%.1f,\"sent\":%llu,\"refills\":%llu,\"errors\":%llu,", getpid(), n,
         o->window, o->size, secs, rx - rx_w, secs > 0 ? (double)(rx - rx_w) / secs : 0.0, tx, refills, errs);
  cpu_json(o, &ca, &cb);
  printf("}\n");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// hold: many concurrent TCP connections kept open (bench/memory.ts)

enum { H_IDLE = 0, H_CONNECTING, H_WAITING, H_HELD, H_FAILED };
typedef struct {
  int fd;
  uint8_t state;
  uint64_t deadline;
} hconn_t;

static int run_hold(const opts_t *o) {
  long maxfd = raise_nofile();
  if (o->nports == 0) die("--ports is required");
  // Every held connection is an fd of this process: fail at once, clearly, rather than with
  // EMFILE halfway (bench/memory.ts splits larger counts over several processes).
  if ((long)o->conns + 64 > maxfd) die("hold: %d connections need %d open files, the limit is %ld", o->conns, o->conns + 64, maxfd);
  hconn_t *cs = calloc((size_t)o->conns, sizeof *cs);
  if (!cs) die("out of memory");
  struct sockaddr_storage dst;
  socklen_t dstlen;
  int family = make_addr(o->addr, o->ports[0], &dst, &dstlen);
  struct sockaddr_storage src[16];
  socklen_t srclen[16];
  for (int i = 0; i < o->nsrc; i++) {
    if (make_addr(o->src_addrs[i], 0, &src[i], &srclen[i]) != family) die("--src-addrs: %s is not of the family of --addr", o->src_addrs[i]);
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  // stdin closed (the parent went away) ends the hold like SIGTERM; a terminal or /dev/null
  // cannot be watched with epoll (EPERM) and is ignored.
  struct epoll_event sev = {.events = EPOLLIN | EPOLLHUP, .data.u32 = UINT32_MAX};
  (void)epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);
  char req[4096], buf[4096];
  memset(req, 'q', sizeof req);
  tcp_counts_t c = {0};
  unsigned long long peer_closed = 0, connect_timeouts = 0;
  int next = 0, inflight = 0, held = 0, failed = 0;
  uint64_t start = now_ns(), hard = start + (uint64_t)(o->max_seconds * 1e9);
  struct epoll_event evs[1024];
  int stdin_closed = 0;
#define HOLD_FAIL(h, err)                                                                                                                            \
  do {                                                                                                                                               \
    if ((err) >= 0) count_err(&c, (err));                                                                                                            \
    close((h)->fd);                                                                                                                                  \
    (h)->fd = -1;                                                                                                                                    \
    (h)->state = H_FAILED;                                                                                                                           \
    failed++;                                                                                                                                        \
    inflight--;                                                                                                                                      \
  } while (0)

  // Phase 1: establish, at most --concurrency in flight.
  uint64_t last_scan = start;
  while (held + failed < o->conns && !stop_flag && !stdin_closed && now_ns() < hard) {
    while (inflight < o->concurrency && next < o->conns) {
      hconn_t *h = &cs[next];
      c.started++;
      h->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (h->fd < 0) {
        count_err(&c, errno);
        h->state = H_FAILED;
        failed++;
        next++;
        continue;
      }
      inflight++;
      h->state = H_CONNECTING;
      h->deadline = now_ns() + (uint64_t)o->timeout_ms * 1000000ull;
      if (o->nsrc > 0) {
        // The port is chosen at connect() (IP_BIND_ADDRESS_NO_PORT): the 4-tuple, not the
        // (address, port) pair, has to be unique.
        int one = 1;
        setsockopt(h->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        int k = next % o->nsrc;
        if (bind(h->fd, (struct sockaddr *)&src[k], srclen[k]) != 0) {
          HOLD_FAIL(h, errno);
          next++;
          continue;
        }
      }
      set_port(&dst, o->ports[next % o->nports]);
      if (connect(h->fd, (struct sockaddr *)&dst, dstlen) != 0 && errno != EINPROGRESS) {
        HOLD_FAIL(h, errno);
        next++;
        continue;
      }
      struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)next};
      epoll_ctl(ep, EPOLL_CTL_ADD, h->fd, &ev);
      next++;
    }
    int n = epoll_wait(ep, evs, 1024, 10);
    for (int k = 0; k < n; k++) {
      uint32_t i = evs[k].data.u32;
      if (i == UINT32_MAX) {
        stdin_closed = read(0, buf, sizeof buf) <= 0;
        continue;
      }
      hconn_t *h = &cs[i];
      if (h->state == H_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err) {
          HOLD_FAIL(h, err);
          continue;
        }
        if (!(evs[k].events & (EPOLLOUT | EPOLLIN))) continue;
        if (send(h->fd, req, (size_t)o->req, MSG_NOSIGNAL) != o->req) {
          HOLD_FAIL(h, errno ? errno : EPIPE);
          continue;
        }
        h->state = H_WAITING;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_MOD, h->fd, &ev);
      } else if (h->state == H_WAITING) {
        ssize_t r = recv(h->fd, buf, sizeof buf, 0);
        if (r > 0) {
          h->state = H_HELD;
          held++;
          inflight--;
          c.ok++;
        } else if (r == 0) {
          c.eof++;
          HOLD_FAIL(h, -1);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
          HOLD_FAIL(h, errno);
        }
      } else if (h->state == H_HELD) {
        // A held connection the other side closed (or reset): counted, closed.
        ssize_t r = recv(h->fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
          peer_closed++;
          close(h->fd);
          h->fd = -1;
          h->state = H_FAILED;
          held--;
          failed++;
        }
      }
    }
    uint64_t now = now_ns();
    if (now - last_scan > 50000000ull) {
      last_scan = now;
      for (int i = 0; i < next; i++) {
        hconn_t *h = &cs[i];
        if ((h->state == H_CONNECTING || h->state == H_WAITING) && now > h->deadline) {
          c.timeouts++;
          if (h->state == H_CONNECTING) connect_timeouts++;
          HOLD_FAIL(h, -1);
        }
      }
    }
  }
  // Whatever is not established by the end of phase 1 (a stop, the hard deadline) is a timeout.
  for (int i = 0; i < o->conns; i++) {
    hconn_t *h = &cs[i];
    if (h->state == H_CONNECTING || h->state == H_WAITING) {
      c.timeouts++;
      if (h->state == H_CONNECTING) connect_timeouts++;
      HOLD_FAIL(h, -1);
    } else if (h->state == H_IDLE && i >= next) {
      h->state = H_FAILED;
    }
  }
  double setup_s = (double)(now_ns() - start) / 1e9;
  // connectTimeouts: no handshake in time; the other timeouts waited for the server's byte.
  printf("{\"mode\":\"hold\",\"pid\":%d,\"conns\":%d,\"established\":%d,\"setupS\":%.3f,\"maxfd\":%ld,\"connectTimeouts\":%llu,", getpid(), o->conns, held, setup_s, maxfd,
         connect_timeouts);
  counts_json(&c);
  printf("}\n");
  fflush(stdout);

  // Phase 2: hold until told to stop; count connections the other side closes.
  while (!stop_flag && !stdin_closed && now_ns() < hard) {
    int n = epoll_wait(ep, evs, 1024, 200);
    for (int k = 0; k < n; k++) {
      uint32_t i = evs[k].data.u32;
      if (i == UINT32_MAX) {
        stdin_closed = read(0, buf, sizeof buf) <= 0;
        continue;
      }
      hconn_t *h = &cs[i];
      if (h->state != H_HELD) continue;
      ssize_t r = recv(h->fd, buf, sizeof buf, 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        peer_closed++;
        close(h->fd);
        h->fd = -1;
        h->state = H_FAILED;
        held--;
      }
    }
  }
  // The client closes first (TIME_WAIT stays in the client's namespace).
  int closed = 0;
  for (int i = 0; i < o->conns; i++) {
    if (cs[i].state == H_HELD) {
      close(cs[i].fd);
      closed++;
    }
  }
  printf("{\"closed\":true,\"held\":%d,\"peerClosed\":%llu,\"heldS\":%.3f,\"reason\":\"%s\"}\n", closed, peer_closed, (double)(now_ns() - start) / 1e9 - setup_s,
         stop_flag ? "signal" : stdin_closed ? "stdin" : "max-seconds");
  fflush(stdout);
  free(cs);
  return 0;
#undef HOLD_FAIL
}

int main(int argc, char **argv) {
  opts_t o;
  parse_args(argc, argv, &o);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  // The client's own CPU time is sampled with the other processes' (reported under its pid).
  if ((!strcmp(o.mode, "stream") || !strcmp(o.mode, "udpdgram")) && o.ncpu_pids < 16) o.cpu_pids[o.ncpu_pids++] = getpid();
  if (!strcmp(o.mode, "server")) return run_server(&o);
  if (!strcmp(o.mode, "rate")) return run_rate(&o);
  if (!strcmp(o.mode, "latency")) return run_latency(&o);
  if (!strcmp(o.mode, "stream")) return run_stream(&o);
  if (!strcmp(o.mode, "udpflows")) return run_udpflows(&o);
  if (!strcmp(o.mode, "udpdgram")) return run_udpdgram(&o);
  if (!strcmp(o.mode, "hold")) return run_hold(&o);
  die("unknown mode %s (server, rate, latency, stream, udpflows, udpdgram, hold)", o.mode);
  return 2;
}

// relay: the smallest TPROXY TCP relay we could write, as a yardstick for the agent's data path
// (bench/flows.ts, `--modes ...,relay,sockmap`). No policy, no flow table, no JavaScript: what is left is what any
// TCP-terminating relay costs on this path (a second TCP connection, a second conntrack entry,
// the bytes moved through the node's TCP stack twice), so the agent's distance to the kernel can
// be split into "terminating the connection" and "the agent".
//
//   relay --port P --mode splice|sockmap [--max-seconds S]
//
// Listens on 127.0.0.1:P with IP_TRANSPARENT (the node's nft rule sends TPROXY'd connections
// there); for each accepted connection opens the upstream connection to its original destination
// from the client's address (IP_TRANSPARENT, IP_BIND_ADDRESS_NO_PORT: a port of its own), then
//   splice:  one epoll thread, edge-triggered, a pipe per direction (the kernel's default size,
//            grown once to 256 KiB when a direction fills it), splice(2) in and out, half-close
//            carried over with shutdown(SHUT_WR); the shape of the agent's engine without its
//            recv() path for short messages, its pipe pool and its fairness budget.
//   sockmap: both sockets go into a BPF SOCKHASH whose sk_skb verdict program redirects every
//            received skb to the peer socket's egress (bpf_sk_redirect_hash, keyed by the
//            receiving socket's cookie); user space only waits for the end. An experiment, never
//            for real traffic: a FIN from either side ends the relay in both directions (no
//            half-close), bytes the kernel still holds for the peer at that moment may be cut
//            off, and bytes that arrive while the two sockets are being put in the map (kept on
//            their socket by the program, then moved by hand) can be overtaken by later ones.
// Prints {"ready":true,"pid":N,...} on stdout once listening; exits on SIGTERM/SIGINT or after --max-seconds.
// Every loop is bounded (epoll_wait with a timeout, the deadline).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

#define PIPE_BYTES (256 * 1024)

static volatile sig_atomic_t stop_flag;
static void on_signal(int s) { (void)s; stop_flag = 1; }

static void die(const char *what) {
  fprintf(stderr, "relay: %s: %s\n", what, strerror(errno));
  exit(1);
}

// ---------------------------------------------------------------------------------------------
// sockmap: a SOCKHASH (cookie of the receiving socket -> its peer) and an sk_skb verdict program

static int map_fd = -1;

static long bpf_call(int cmd, union bpf_attr *a) { return syscall(SYS_bpf, cmd, a, sizeof *a); }

#define INSN(code, dst, src, off, imm) ((struct bpf_insn){(code), (dst), (src), (off), (imm)})

static void sockmap_setup(void) {
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_type = BPF_MAP_TYPE_SOCKHASH;
  a.key_size = 8;
  a.value_size = 8;
  a.max_entries = 65536;
  map_fd = (int)bpf_call(BPF_MAP_CREATE, &a);
  if (map_fd < 0) die("bpf(BPF_MAP_CREATE sockhash)");
  // key = bpf_get_socket_cookie(skb); r = bpf_sk_redirect_hash(skb, map, &key, 0 /* egress */);
  // return r == SK_DROP ? SK_PASS : r. No peer in the map yet (the first socket is in, the second
  // not): the skb stays on its own socket, where sockmap_start reads it.
  struct bpf_insn prog[] = {
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),               // r6 = skb
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_socket_cookie),  // r0 = cookie(skb->sk)
      INSN(BPF_STX | BPF_MEM | BPF_DW, 10, 0, -8, 0),              // key on the stack
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),               // r1 = skb
      INSN(BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, 0),  // r2 = map (imm set below)
      INSN(0, 0, 0, 0, 0),
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0),              // r3 = &key
      INSN(BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -8),
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0),               // r4 = flags: egress
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash),
      INSN(BPF_JMP | BPF_JNE | BPF_K, 0, 0, 1, SK_DROP),           // redirected: return it
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, SK_PASS),         // else keep it here
      INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  prog[4].imm = map_fd;
  static char verifier_log[16384];
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_SK_SKB;
  a.insns = (uint64_t)(uintptr_t)prog;
  a.insn_cnt = sizeof prog / sizeof prog[0];
  a.license = (uint64_t)(uintptr_t) "GPL";
  a.log_buf = (uint64_t)(uintptr_t)verifier_log;
  a.log_size = sizeof verifier_log;
  a.log_level = 1;
  int prog_fd = (int)bpf_call(BPF_PROG_LOAD, &a);
  if (prog_fd < 0) {
    fprintf(stderr, "relay: verifier log:\n%s\n", verifier_log);
    die("bpf(BPF_PROG_LOAD sk_skb)");
  }
  memset(&a, 0, sizeof a);
  a.target_fd = map_fd;
  a.attach_bpf_fd = prog_fd;
  a.attach_type = BPF_SK_SKB_VERDICT;
  if (bpf_call(BPF_PROG_ATTACH, &a) < 0) die("bpf(BPF_PROG_ATTACH sk_skb verdict)");
}

static uint64_t cookie_of(int fd) {
  uint64_t c = 0;
  socklen_t l = sizeof c;
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &l) != 0) return 0;
  return c;
}

static int sockmap_put(uint64_t key, int fd) {
  uint64_t v = (uint64_t)fd;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = (uint32_t)map_fd;
  a.key = (uint64_t)(uintptr_t)&key;
  a.value = (uint64_t)(uintptr_t)&v;
  a.flags = BPF_ANY;
  return (int)bpf_call(BPF_MAP_UPDATE_ELEM, &a);
}

static void sockmap_del(uint64_t key) {
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = (uint32_t)map_fd;
  a.key = (uint64_t)(uintptr_t)&key;
  bpf_call(BPF_MAP_DELETE_ELEM, &a);
}

// ---------------------------------------------------------------------------------------------
// connections

typedef struct conn conn_t;
typedef struct {
  conn_t *c;
  int idx;  // 0 client side, 1 upstream side
} side_ref_t;

typedef struct {
  int pipe_r, pipe_w;
  size_t in_pipe, cap;
  int eof, shut;
} dir_t;

struct conn {
  int fd[2];  // client, upstream
  side_ref_t ref[2];
  dir_t dir[2];  // dir[0]: client -> upstream, dir[1]: upstream -> client
  int connected, mapped, dead, ready;
  uint64_t cookie[2];
  conn_t *next_dead;
  conn_t *next_ready;
};

static int sockmap_mode;
static int ep;
static unsigned long long accepted, completed, failed, active;
// Connections ended during one epoll batch: freed after it, since a later event of the same
// batch may still point at them (closing an fd does not take back events already returned).
static conn_t *graveyard;
// Connections that spent their splice budget with work left: edge-triggered epoll reports no new
// edge for it, so they are served again after the batch (before the next wait, which then does
// not block).
static conn_t *ready_list;

static void conn_free(conn_t *c, int reset) {
  if (c->dead) return;
  c->dead = 1;
  for (int i = 0; i < 2; i++) {
    if (c->fd[i] < 0) continue;
    if (reset) {
      struct linger lg = {1, 0};
      setsockopt(c->fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd[i]);
  }
  if (c->mapped) {
    sockmap_del(c->cookie[0]);
    sockmap_del(c->cookie[1]);
  }
  for (int d = 0; d < 2; d++) {
    if (c->dir[d].pipe_r >= 0) close(c->dir[d].pipe_r);
    if (c->dir[d].pipe_w >= 0) close(c->dir[d].pipe_w);
  }
  if (reset) failed++;
  else completed++;
  active--;
  c->next_dead = graveyard;
  graveyard = c;
}

// Moves what direction d can move now. 1: the direction is over (FIN passed on), 0: waiting for
// an edge, 2: budget spent with work left, -1: the relay failed.
static int pump(conn_t *c, int d) {
  dir_t *x = &c->dir[d];
  int src = c->fd[d], dst = c->fd[1 - d];
  for (int guard = 0; guard < 1024; guard++) {
    if (x->shut) return 1;
    if (x->in_pipe > 0) {
      ssize_t n = splice(x->pipe_r, NULL, dst, NULL, x->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        x->in_pipe -= (size_t)n;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
      return -1;
    }
    if (x->eof) {
      if (shutdown(dst, SHUT_WR) != 0) return -1;
      x->shut = 1;
      return 1;
    }
    ssize_t n = splice(src, NULL, x->pipe_w, NULL, x->cap, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      x->in_pipe += (size_t)n;
      // A full pipe: a bulk direction; it grows once (as the agent's), best effort.
      if (x->in_pipe >= x->cap && x->cap < PIPE_BYTES) {
        int got = fcntl(x->pipe_w, F_SETPIPE_SZ, PIPE_BYTES);
        x->cap = got > 0 ? (size_t)got : PIPE_BYTES / 4 + 1;  // on failure: never again
      }
    }
    else if (n == 0) x->eof = 1;
    else if (errno == EAGAIN || errno == EINTR) return 0;
    else return -1;
  }
  return 2;  // budget spent: back on the ready list
}

// sockmap mode: once connected, both sockets go into the map; then what either received before
// its verdict program was armed (it sees only skbs that arrive later) is moved by hand. Bytes that
// arrive while that runs may overtake the ones moved by hand: one of the reasons this is an
// experiment only.
// 0: moved what there was, 1: the source's FIN came, -1: failed.
static int drain(int from, int to) {
  char buf[16384];
  for (int i = 0; i < 64; i++) {
    ssize_t n = recv(from, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return 1;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (send(to, buf, (size_t)n, MSG_NOSIGNAL) != n) return -1;
  }
  return 0;
}

// 0: armed, 1: a side had ended already (the relay ends), -1: failed.
static int sockmap_start(conn_t *c) {
  c->cookie[0] = cookie_of(c->fd[0]);
  c->cookie[1] = cookie_of(c->fd[1]);
  if (c->cookie[0] == 0 || c->cookie[1] == 0) return -1;
  if (sockmap_put(c->cookie[1], c->fd[0]) != 0 || sockmap_put(c->cookie[0], c->fd[1]) != 0) return -1;
  c->mapped = 1;
  for (int d = 0; d < 2; d++) {
    int r = drain(c->fd[d], c->fd[1 - d]);
    if (r < 0) return -1;
    if (r == 1) {
      shutdown(c->fd[1 - d], SHUT_WR);  // the FIN the edge-triggered wait may not report again
      return 1;
    }
  }
  return 0;
}

static void serve(conn_t *c) {
  int a = pump(c, 0), b = pump(c, 1);
  if (a < 0 || b < 0) conn_free(c, 1);
  else if (a == 1 && b == 1) conn_free(c, 0);
  else if ((a == 2 || b == 2) && !c->ready) {
    c->ready = 1;
    c->next_ready = ready_list;
    ready_list = c;
  }
}

static void on_conn_event(side_ref_t *ref, uint32_t events) {
  conn_t *c = ref->c;
  if (c->dead) return;
  if (!c->connected) {
    if (ref->idx != 1 || !(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &l);
    if (err != 0) {
      conn_free(c, 1);
      return;
    }
    c->connected = 1;
    if (sockmap_mode) {
      int r = sockmap_start(c);
      if (r != 0) {
        conn_free(c, r < 0);
        return;
      }
    }
  }
  if (sockmap_mode) {
    // The kernel moves the bytes; a FIN or an error on either side ends the relay.
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      shutdown(c->fd[1 - ref->idx], SHUT_WR);
      conn_free(c, (events & EPOLLERR) != 0);
    }
    return;
  }
  serve(c);
}

static int add(int fd, side_ref_t *ref) {
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = ref};
  return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static void on_accept(int lfd) {
  for (int i = 0; i < 64; i++) {
    struct sockaddr_storage peer, orig;
    socklen_t pl = sizeof peer, ol = sizeof orig;
    int fd = accept4(lfd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    accepted++;
    active++;
    conn_t *c = calloc(1, sizeof *c);
    if (!c) die("calloc");
    c->fd[0] = fd;
    c->fd[1] = -1;
    for (int d = 0; d < 2; d++) c->dir[d].pipe_r = c->dir[d].pipe_w = -1;
    if (getsockname(fd, (struct sockaddr *)&orig, &ol) != 0) goto fail;
    int one = 1;
    int lvl = peer.ss_family == AF_INET6 ? SOL_IPV6 : SOL_IP;
    int opt = peer.ss_family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT;
    in_port_t *port = peer.ss_family == AF_INET ? &((struct sockaddr_in *)&peer)->sin_port : &((struct sockaddr_in6 *)&peer)->sin6_port;
    in_port_t client_port = *port;
    *port = 0;
    // From the client's address with a port of its own, never the client's own port (the kernel
    // may pick it: it checks sockets, not conntrack, and the two legs' entries would merge), as
    // the agent does; a few tries.
    for (int attempt = 0; attempt < 4; attempt++) {
      if (c->fd[1] >= 0) close(c->fd[1]);
      c->fd[1] = socket(peer.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      int u = c->fd[1];
      if (u < 0) goto fail;
      if (setsockopt(u, lvl, opt, &one, sizeof one) != 0) goto fail;
      if (setsockopt(u, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) != 0) goto fail;
      if (bind(u, (struct sockaddr *)&peer, pl) != 0) goto fail;
      if (connect(u, (struct sockaddr *)&orig, ol) != 0 && errno != EINPROGRESS) goto fail;
      struct sockaddr_storage got;
      socklen_t gl = sizeof got;
      if (getsockname(u, (struct sockaddr *)&got, &gl) != 0) goto fail;
      in_port_t p = got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port : ((struct sockaddr_in6 *)&got)->sin6_port;
      if (p != client_port) break;
      if (attempt == 3) goto fail;
    }
    if (!sockmap_mode) {
      for (int d = 0; d < 2; d++) {
        int p[2];
        if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) goto fail;
        c->dir[d].pipe_r = p[0];
        c->dir[d].pipe_w = p[1];
        int cap = fcntl(p[1], F_GETPIPE_SZ);
        c->dir[d].cap = cap > 0 ? (size_t)cap : 65536;
      }
    }
    c->ref[0] = (side_ref_t){c, 0};
    c->ref[1] = (side_ref_t){c, 1};
    if (add(c->fd[0], &c->ref[0]) != 0 || add(c->fd[1], &c->ref[1]) != 0) goto fail;
    continue;
  fail:
    conn_free(c, 1);
  }
}

int main(int argc, char **argv) {
  int port = 0;
  double max_seconds = 600;
  const char *mode = "splice";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--mode")) mode = argv[i + 1];
    else if (!strcmp(argv[i], "--max-seconds")) max_seconds = atof(argv[i + 1]);
    else {
      fprintf(stderr, "relay: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (port <= 0 || port > 65535 || (strcmp(mode, "splice") && strcmp(mode, "sockmap")) || max_seconds <= 0 || max_seconds > 3600) {
    fprintf(stderr, "usage: relay --port P --mode splice|sockmap [--max-seconds S (at most 3600)]\n");
    return 2;
  }
  sockmap_mode = !strcmp(mode, "sockmap");
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  signal(SIGPIPE, SIG_IGN);
  if (sockmap_mode) sockmap_setup();
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (lfd < 0) die("socket");
  if (setsockopt(lfd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) != 0) die("IP_TRANSPARENT");
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&la, sizeof la) != 0) die("bind");
  if (listen(lfd, 4096) != 0) die("listen");
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  static side_ref_t listener = {NULL, -1};
  // Level-triggered: on_accept takes at most 64 per call, and what it leaves is reported again.
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0) die("epoll_ctl listener");
  printf("{\"ready\":true,\"pid\":%d,\"mode\":\"%s\",\"port\":%d}\n", (int)getpid(), mode, port);
  fflush(stdout);
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  struct epoll_event evs[256];
  while (!stop_flag) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9 > max_seconds) break;
    int n = epoll_wait(ep, evs, 256, ready_list ? 0 : 200);
    for (int i = 0; i < n; i++) {
      side_ref_t *ref = evs[i].data.ptr;
      if (ref == &listener) on_accept(lfd);
      else on_conn_event(ref, evs[i].events);
    }
    // The ready list of the turn before (connections this batch served are on it again if so).
    conn_t *again = ready_list;
    ready_list = NULL;
    while (again) {
      conn_t *c = again;
      again = c->next_ready;
      c->ready = 0;
      if (!c->dead) serve(c);
    }
    while (graveyard) {
      conn_t *c = graveyard;
      graveyard = c->next_dead;
      free(c);
    }
  }
  printf("{\"stopped\":true,\"accepted\":%llu,\"completed\":%llu,\"failed\":%llu,\"active\":%llu}\n", accepted, completed, failed, active);
  return 0;
}

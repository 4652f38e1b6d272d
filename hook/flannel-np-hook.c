/*
 * flannel-np-hook: OCI createContainer hook for Docker <= 27.
 *
 * runc runs it inside the new container's namespaces (network included) before pivot_root, after
 * Docker's libnetwork-setkey prestart hook has moved the interfaces in and started Docker's
 * resolver. It tells the flannel-np daemon which network namespace is about to start and waits
 * until the daemon says its DNS listener serves there, so the container's first query is
 * answered by flannel-np and not by Docker's resolver.
 *
 * It must never stop a container: every path exits 0. Without the daemon's socket it returns at
 * once; a daemon that does not answer is given up after --timeout-ms (default 2000).
 *
 * Where the socket is: the managed plugin creates it next to its plugin socket, in the runtime
 * directory Docker gives every managed plugin (host /run/docker/plugins/<plugin id>/, mounted at
 * /run/docker/plugins inside it). The plugin id is not known here, so --socket is a glob pattern;
 * the sockets it matches are tried in order until one accepts (a stale one, left by a killed
 * daemon or an old plugin, refuses at once).
 *
 * Usage: flannel-np-hook [--socket PATTERN] [--timeout-ms N]   (OCI state JSON on stdin)
 * Protocol (one line each way, on a unix stream socket):
 *   -> {"id":"<container id>","netns":{"dev":<st_dev>,"ino":<st_ino>}}
 *   <- {"ok":true|false,"status":"...","detail":"..."}
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "json.h"

#define DEFAULT_SOCKET "/run/docker/plugins/*/flannel-np-hook.sock"
#define DEFAULT_TIMEOUT_MS 2000
#define MAX_STATE (1 << 20)

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void give_up(const char *what, const char *detail) {
  fprintf(stderr, "flannel-np-hook: %s%s%s; the container starts anyway (its first DNS queries may reach Docker's resolver)\n",
          what, detail ? ": " : "", detail ? detail : "");
  exit(0);
}

/* Milliseconds left until the deadline, at least 0. */
static int left(long long deadline) {
  long long l = deadline - now_ms();
  return l < 0 ? 0 : (int)l;
}

/* The container id from the OCI state: a top-level "id" of [A-Za-z0-9_.-], else "". */
static void container_id(const char *buf, size_t n, char *out, size_t cap) {
  out[0] = 0;
  const char *vs, *ve;
  if (fnp_member(buf, buf + n, "id", &vs, &ve) != 1 || *vs != '"') return;
  size_t len = (size_t)(ve - vs) - 2;
  if (len == 0 || len >= cap) return;
  for (size_t i = 0; i < len; i++) {
    char c = vs[1 + i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return;
  }
  memcpy(out, vs + 1, len);
  out[len] = 0;
}

int main(int argc, char **argv) {
  const char *path = DEFAULT_SOCKET;
  long timeout = DEFAULT_TIMEOUT_MS;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--socket") && i + 1 < argc) {
      path = argv[++i];
    } else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) {
      char *e;
      errno = 0;
      timeout = strtol(argv[++i], &e, 10);
      if (errno || *e || timeout < 0 || timeout > 600000) {
        fprintf(stderr, "flannel-np-hook: --timeout-ms must be 0..600000, got '%s'; using %d\n", argv[i], DEFAULT_TIMEOUT_MS);
        timeout = DEFAULT_TIMEOUT_MS;
      }
    } else {
      fprintf(stderr, "flannel-np-hook: ignoring unknown argument '%s'\n", argv[i]);
    }
  }
  long long deadline = now_ms() + timeout;

  /* the state comes first: runc writes it and waits for us to read it */
  static char state[MAX_STATE];
  size_t n = 0;
  for (;;) {
    ssize_t r = read(0, state + n, sizeof state - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
    if (n == sizeof state - 1) break;
  }
  state[n] = 0;
  char id[129];
  container_id(state, n, id, sizeof id);

  glob_t g;
  if (glob(path, GLOB_NOSORT, NULL, &g) != 0 || g.gl_pathc == 0) return 0; /* flannel-np not running here */

  struct stat ns;
  if (stat("/proc/self/ns/net", &ns) != 0) give_up("cannot stat /proc/self/ns/net", strerror(errno));

  int fd = -1;
  char why[600] = "";
  for (size_t i = 0; i < g.gl_pathc && fd < 0; i++) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(g.gl_pathv[i]) >= sizeof sa.sun_path) {
      snprintf(why, sizeof why, "%s: path too long", g.gl_pathv[i]);
      continue;
    }
    strcpy(sa.sun_path, g.gl_pathv[i]);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) give_up("socket", strerror(errno));
    int err = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      err = errno;
      if (err == EAGAIN || err == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, left(deadline)) <= 0) {
          err = ETIMEDOUT;
        } else {
          socklen_t l = sizeof err;
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
        }
      }
    }
    if (err) {
      snprintf(why, sizeof why, "%s: %s", g.gl_pathv[i], strerror(err));
      close(fd);
      fd = -1;
    }
  }
  globfree(&g);
  if (fd < 0) give_up("cannot reach flannel-np", why);

  char req[512];
  int len = snprintf(req, sizeof req, "{\"id\":\"%s\",\"netns\":{\"dev\":%llu,\"ino\":%llu}}\n", id,
                     (unsigned long long)ns.st_dev, (unsigned long long)ns.st_ino);
  for (int off = 0; off < len;) {
    ssize_t w = send(fd, req + off, (size_t)(len - off), MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      if (poll(&p, 1, left(deadline)) <= 0) give_up("daemon did not take the request in time", NULL);
      continue;
    }
    if (w <= 0) give_up("send", strerror(errno));
    off += (int)w;
  }

  char reply[1024];
  size_t got = 0;
  while (got < sizeof reply - 1 && !memchr(reply, '\n', got)) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int pr = poll(&p, 1, left(deadline));
    if (pr < 0 && errno == EINTR) continue;
    if (pr == 0) give_up("no answer from flannel-np in time", NULL);
    ssize_t r = recv(fd, reply + got, sizeof reply - 1 - got, 0);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r <= 0) give_up("flannel-np closed the connection without an answer", NULL);
    got += (size_t)r;
  }
  reply[got] = 0;
  char *nl = strchr(reply, '\n');
  if (nl) *nl = 0;
  const char *vs, *ve;
  if (fnp_member(reply, reply + strlen(reply), "ok", &vs, &ve) != 1 || strncmp(vs, "true", 4) != 0)
    give_up("flannel-np did not inject its resolver", reply);
  close(fd);
  return 0;
}

/*
 * flannel-np-runtime: an OCI runtime wrapper that adds hooks to a bundle and then becomes runc
 * (the role sovarto/oci-add-hooks played, as a static binary with no Go toolchain to install).
 *
 * Usage: flannel-np-runtime --hook-config-path FILE --runtime-path /usr/bin/runc [runc args...]
 *
 * FILE holds the "hooks" object of an OCI spec: {"hooks":{"createContainer":[{...}]}}. When the
 * runc arguments name a bundle (--bundle DIR, --bundle=DIR, -b DIR), the hooks are merged into
 * DIR/config.json: prepended to the lists that exist (Docker <= 27 already puts its
 * libnetwork-setkey prestart hook there, which must survive), the missing lists and the "hooks"
 * object added; a hook whose path is already listed is not added twice. The file is replaced
 * atomically. Then runc is exec'd with the runc arguments unchanged, so signals, exit codes and
 * `runc features` and every other subcommand behave exactly as runc's own.
 *
 * A hook file or bundle that cannot be merged is reported on stderr and runc runs without the
 * extra hooks: the hook is optional, a container must not fail to start because of it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"

static const char *LISTS[] = {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"};

typedef struct {
  char *p;
  size_t n;
} buf_t;

static int read_file(const char *path, buf_t *b, struct stat *st) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  if (fstat(fd, st) != 0 || st->st_size > (64 << 20)) {
    close(fd);
    errno = EFBIG;
    return -1;
  }
  b->p = malloc((size_t)st->st_size + 1);
  b->n = 0;
  for (;;) {
    ssize_t r = read(fd, b->p + b->n, (size_t)st->st_size - b->n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      close(fd);
      return -1;
    }
    if (r == 0) break;
    b->n += (size_t)r;
    if (b->n == (size_t)st->st_size) break;
  }
  b->p[b->n] = 0;
  close(fd);
  return 0;
}

/* Returns a new buffer: b with text inserted at offset at. */
static buf_t insert_at(buf_t b, size_t at, const char *text, size_t tn) {
  buf_t o = {malloc(b.n + tn + 1), b.n + tn};
  memcpy(o.p, b.p, at);
  memcpy(o.p + at, text, tn);
  memcpy(o.p + at + tn, b.p + at, b.n - at);
  o.p[o.n] = 0;
  free(b.p);
  return o;
}

/* Is there an element in the array [as, ae) whose "path" has the same JSON text as path? */
static int has_path(const char *as, const char *ae, const char *ps, const char *pe) {
  const char *p = fnp_ws(as + 1, ae);
  while (p < ae && *p != ']') {
    const char *e = fnp_value(p, ae);
    if (!e) return 0;
    const char *vs, *ve;
    if (*p == '{' && fnp_member(p, e, "path", &vs, &ve) == 1 && ve - vs == pe - ps && !memcmp(vs, ps, (size_t)(pe - ps)))
      return 1;
    p = fnp_ws(e, ae);
    if (p < ae && *p == ',') p = fnp_ws(p + 1, ae);
  }
  return 0;
}

/*
 * Merges one list: elements of ours ([os, oe), a JSON array) into cfg. Returns 0 on success
 * (cfg possibly replaced), -1 if cfg is not what an OCI config must be.
 */
static int merge_list(buf_t *cfg, const char *name, const char *os, const char *oe) {
  const char *end = cfg->p + cfg->n;
  const char *top = fnp_ws(cfg->p, end);
  const char *hs, *he;
  int h = fnp_member(top, end, "hooks", &hs, &he);
  if (h < 0) return -1;
  /* our elements, each not yet in the bundle, joined by commas */
  size_t cap = (size_t)(oe - os) + 64 + strlen(name);
  char *add = malloc(cap);
  size_t an = 0;
  const char *ls = NULL, *le = NULL;
  int l = 0;
  if (h == 1) {
    if (*hs != '{') {
      free(add);
      return -1;
    }
    l = fnp_member(hs, he, name, &ls, &le);
    if (l < 0 || (l == 1 && *ls != '[')) {
      free(add);
      return -1;
    }
  }
  const char *p = fnp_ws(os + 1, oe);
  while (p < oe && *p != ']') {
    const char *e = fnp_value(p, oe);
    const char *ps, *pe;
    int dup = l == 1 && *p == '{' && fnp_member(p, e, "path", &ps, &pe) == 1 && has_path(ls, le, ps, pe);
    if (!dup) {
      if (an) add[an++] = ',';
      memcpy(add + an, p, (size_t)(e - p));
      an += (size_t)(e - p);
    }
    p = fnp_ws(e, oe);
    if (p < oe && *p == ',') p = fnp_ws(p + 1, oe);
  }
  if (an == 0) {
    free(add);
    return 0;
  }
  char *text = malloc(an + strlen(name) + 32);
  size_t at;
  size_t tn;
  if (h == 0) { /* no hooks object: add one as the first member of the top-level object */
    const char *after = fnp_ws(top + 1, end);
    tn = (size_t)sprintf(text, "\"hooks\":{\"%s\":[%.*s]}%s", name, (int)an, add, *after == '}' ? "" : ",");
    at = (size_t)(top + 1 - cfg->p);
  } else if (l == 0) { /* no such list: add it as the first member of "hooks" */
    const char *after = fnp_ws(hs + 1, he);
    tn = (size_t)sprintf(text, "\"%s\":[%.*s]%s", name, (int)an, add, *after == '}' ? "" : ",");
    at = (size_t)(hs + 1 - cfg->p);
  } else { /* prepend to the existing list */
    const char *after = fnp_ws(ls + 1, le);
    tn = (size_t)sprintf(text, "%.*s%s", (int)an, add, *after == ']' ? "" : ",");
    at = (size_t)(ls + 1 - cfg->p);
  }
  *cfg = insert_at(*cfg, at, text, tn);
  free(text);
  free(add);
  return 0;
}

/* Merges the hook file into DIR/config.json. Returns 0, or -1 with a message on stderr. */
static int merge(const char *hookfile, const char *bundle) {
  buf_t hooks, cfg;
  struct stat hst, cst;
  if (read_file(hookfile, &hooks, &hst) != 0) {
    fprintf(stderr, "flannel-np-runtime: cannot read hook config %s: %s\n", hookfile, strerror(errno));
    return -1;
  }
  const char *hend = hooks.p + hooks.n;
  const char *hs, *he;
  if (!fnp_valid(hooks.p, hend) || fnp_member(hooks.p, hend, "hooks", &hs, &he) != 1 || *hs != '{') {
    fprintf(stderr, "flannel-np-runtime: %s is not {\"hooks\":{...}}\n", hookfile);
    return -1;
  }
  char path[4096];
  if (snprintf(path, sizeof path, "%s/config.json", bundle) >= (int)sizeof path) {
    fprintf(stderr, "flannel-np-runtime: bundle path too long\n");
    return -1;
  }
  if (read_file(path, &cfg, &cst) != 0) {
    fprintf(stderr, "flannel-np-runtime: cannot read %s: %s\n", path, strerror(errno));
    return -1;
  }
  if (!fnp_valid(cfg.p, cfg.p + cfg.n) || *fnp_ws(cfg.p, cfg.p + cfg.n) != '{') {
    fprintf(stderr, "flannel-np-runtime: %s is not a JSON object\n", path);
    return -1;
  }
  size_t before = cfg.n;
  for (size_t i = 0; i < sizeof LISTS / sizeof *LISTS; i++) {
    const char *ls, *le;
    int l = fnp_member(hs, he, LISTS[i], &ls, &le);
    if (l == 0) continue;
    if (l < 0 || *ls != '[') {
      fprintf(stderr, "flannel-np-runtime: %s: \"%s\" is not a list\n", hookfile, LISTS[i]);
      return -1;
    }
    if (merge_list(&cfg, LISTS[i], ls, le) != 0) {
      fprintf(stderr, "flannel-np-runtime: %s: \"hooks\" or \"hooks.%s\" has an unexpected type\n", path, LISTS[i]);
      return -1;
    }
  }
  if (cfg.n == before) return 0; /* already merged */
  if (!fnp_valid(cfg.p, cfg.p + cfg.n)) { /* cannot happen; never write a broken spec */
    fprintf(stderr, "flannel-np-runtime: internal error: merged %s is not valid JSON\n", path);
    return -1;
  }
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.flannel-np.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, cst.st_mode & 07777);
  if (fd < 0) {
    fprintf(stderr, "flannel-np-runtime: cannot write %s: %s\n", tmp, strerror(errno));
    return -1;
  }
  for (size_t off = 0; off < cfg.n;) {
    ssize_t w = write(fd, cfg.p + off, cfg.n - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      fprintf(stderr, "flannel-np-runtime: cannot write %s: %s\n", tmp, strerror(errno));
      close(fd);
      unlink(tmp);
      return -1;
    }
    off += (size_t)w;
  }
  if (close(fd) != 0 || rename(tmp, path) != 0) {
    fprintf(stderr, "flannel-np-runtime: cannot replace %s: %s\n", path, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *hookfile = NULL, *runtime = NULL;
  int i = 1;
  while (i + 1 < argc && (!strcmp(argv[i], "--hook-config-path") || !strcmp(argv[i], "--runtime-path"))) {
    if (!strcmp(argv[i], "--hook-config-path")) hookfile = argv[i + 1];
    else runtime = argv[i + 1];
    i += 2;
  }
  if (!hookfile || !runtime || runtime[0] != '/') {
    fprintf(stderr, "flannel-np-runtime: usage: flannel-np-runtime --hook-config-path FILE --runtime-path /ABS/PATH/runc [runc args...]\n");
    return 2;
  }
  const char *bundle = NULL;
  for (int j = i; j < argc; j++) {
    if ((!strcmp(argv[j], "--bundle") || !strcmp(argv[j], "-b")) && j + 1 < argc) bundle = argv[j + 1];
    else if (!strncmp(argv[j], "--bundle=", 9)) bundle = argv[j] + 9;
  }
  if (bundle && bundle[0]) merge(hookfile, bundle);

  /* runc gets exactly the arguments it was meant to get, as argv[0] its own path */
  char **args = calloc((size_t)(argc - i + 2), sizeof *args);
  args[0] = (char *)runtime;
  for (int j = i; j < argc; j++) args[j - i + 1] = argv[j];
  execv(runtime, args);
  fprintf(stderr, "flannel-np-runtime: cannot run %s: %s\n", runtime, strerror(errno));
  return 127;
}

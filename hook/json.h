/*
 * A small, strict JSON scanner shared by the hook and the runtime wrapper. It never builds a
 * tree: it finds the byte spans of values so the wrapper can splice text into Docker's
 * config.json without re-serialising (and so without reordering or dropping) anything else.
 */
#ifndef FNP_JSON_H
#define FNP_JSON_H

#include <stddef.h>
#include <string.h>

#define FNP_JSON_MAX_DEPTH 512

static inline const char *fnp_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

/* p at '"': returns the position after the closing quote, or NULL. */
static inline const char *fnp_string(const char *p, const char *end) {
  if (p >= end || *p != '"') return NULL;
  for (p++; p < end; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') return p + 1;
    if (c < 0x20) return NULL;
    if (c == '\\') {
      if (++p >= end) return NULL;
      if (*p == 'u') {
        for (int i = 0; i < 4; i++) {
          if (++p >= end) return NULL;
          char h = *p;
          if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F'))) return NULL;
        }
      } else if (!strchr("\"\\/bfnrt", *p)) {
        return NULL;
      }
    }
  }
  return NULL;
}

static inline const char *fnp_value_d(const char *p, const char *end, int depth);

/* p at '{' or '[': returns the position after the matching bracket, or NULL. */
static inline const char *fnp_container(const char *p, const char *end, int depth) {
  if (depth > FNP_JSON_MAX_DEPTH) return NULL;
  char close = *p == '{' ? '}' : ']';
  int object = *p == '{';
  p = fnp_ws(p + 1, end);
  if (p < end && *p == close) return p + 1;
  for (;;) {
    if (object) {
      p = fnp_string(p, end);
      if (!p) return NULL;
      p = fnp_ws(p, end);
      if (p >= end || *p != ':') return NULL;
      p = fnp_ws(p + 1, end);
    }
    p = fnp_value_d(p, end, depth + 1);
    if (!p) return NULL;
    p = fnp_ws(p, end);
    if (p >= end) return NULL;
    if (*p == close) return p + 1;
    if (*p != ',') return NULL;
    p = fnp_ws(p + 1, end);
  }
}

static inline const char *fnp_value_d(const char *p, const char *end, int depth) {
  if (p >= end) return NULL;
  switch (*p) {
    case '{':
    case '[':
      return fnp_container(p, end, depth);
    case '"':
      return fnp_string(p, end);
    case 't':
      return end - p >= 4 && !memcmp(p, "true", 4) ? p + 4 : NULL;
    case 'f':
      return end - p >= 5 && !memcmp(p, "false", 5) ? p + 5 : NULL;
    case 'n':
      return end - p >= 4 && !memcmp(p, "null", 4) ? p + 4 : NULL;
    default: {
      const char *s = p;
      if (p < end && *p == '-') p++;
      if (p >= end || *p < '0' || *p > '9') return NULL;
      while (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-')) p++;
      return p > s ? p : NULL;
    }
  }
}

/* Returns the position after the value at p (leading whitespace skipped), or NULL if invalid. */
static inline const char *fnp_value(const char *p, const char *end) {
  return fnp_value_d(fnp_ws(p, end), end, 0);
}

/* A whole document: one value and nothing but whitespace after it. */
static inline int fnp_valid(const char *p, const char *end) {
  const char *v = fnp_value(p, end);
  return v && fnp_ws(v, end) == end;
}

/*
 * In the object starting at obj ('{'), finds the member whose raw key text (between the quotes,
 * unescaped keys only) equals key. Sets *vs and *ve to the value's span and returns 1; 0 if absent,
 * -1 if the object is malformed.
 */
static inline int fnp_member(const char *obj, const char *end, const char *key, const char **vs, const char **ve) {
  size_t klen = strlen(key);
  const char *p = fnp_ws(obj, end);
  if (p >= end || *p != '{') return -1;
  p = fnp_ws(p + 1, end);
  if (p < end && *p == '}') return 0;
  for (;;) {
    const char *ks = p;
    p = fnp_string(p, end);
    if (!p) return -1;
    int match = (size_t)(p - ks) == klen + 2 && !memcmp(ks + 1, key, klen);
    p = fnp_ws(p, end);
    if (p >= end || *p != ':') return -1;
    p = fnp_ws(p + 1, end);
    const char *v = p;
    p = fnp_value_d(p, end, 1);
    if (!p) return -1;
    if (match) {
      *vs = v;
      *ve = p;
      return 1;
    }
    p = fnp_ws(p, end);
    if (p >= end) return -1;
    if (*p == '}') return 0;
    if (*p != ',') return -1;
    p = fnp_ws(p + 1, end);
  }
}

#endif

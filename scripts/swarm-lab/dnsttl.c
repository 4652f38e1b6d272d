/* dnsttl NAME [SERVER] : one DNS query (type A, UDP, default server 127.0.0.11) and one line out:
 *   "TTL ADDRESS"   the first A record of the answer, e.g. "599 10.200.0.3"
 *   "none RCODE"    an answer without an A record (RCODE 3: no such name)
 *   "none timeout"  no answer within 2 s
 * Exit 0 only for an A record. Built static into the lab's busybox image (swarm-lab.sh up), so a
 * container's entrypoint can make its very first query with it: the TTL tells which resolver
 * answered it, flannel-np's (DNS_TTL) or Docker's (always 600). */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int encode_name(const char *name, unsigned char *out, int room) {
  int n = 0;
  while (*name) {
    const char *dot = strchr(name, '.');
    int len = dot ? (int)(dot - name) : (int)strlen(name);
    if (len < 1 || len > 63 || n + len + 2 > room) return -1;
    out[n++] = (unsigned char)len;
    memcpy(out + n, name, (size_t)len);
    n += len;
    name += len + (dot ? 1 : 0);
  }
  out[n++] = 0;
  return n;
}

/* Offset just past the (possibly compressed) name at off, or -1. */
static int skip_name(const unsigned char *m, int len, int off) {
  while (off < len) {
    if ((m[off] & 0xc0) == 0xc0) return off + 2 <= len ? off + 2 : -1;
    if (m[off] == 0) return off + 1;
    off += m[off] + 1;
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: dnsttl NAME [SERVER]\n");
    return 2;
  }
  unsigned char q[300] = {0x7e, 0x51, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}; /* id, RD, 1 question */
  int n = encode_name(argv[1], q + 12, (int)sizeof q - 16);
  if (n < 0) {
    fprintf(stderr, "dnsttl: '%s' is not a DNS name\n", argv[1]);
    return 2;
  }
  n += 12;
  q[n++] = 0; q[n++] = 1; /* type A */
  q[n++] = 0; q[n++] = 1; /* class IN */

  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(53)};
  if (inet_pton(AF_INET, argc == 3 ? argv[2] : "127.0.0.11", &to.sin_addr) != 1) {
    fprintf(stderr, "dnsttl: '%s' is not an IPv4 address\n", argv[2]);
    return 2;
  }
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct timeval tv = {2, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (s < 0 || connect(s, (struct sockaddr *)&to, sizeof to) != 0 || send(s, q, (size_t)n, 0) != n) {
    puts("none send");
    return 1;
  }
  unsigned char r[1500];
  int len;
  do { /* a stray datagram with another id is not the answer */
    len = (int)recv(s, r, sizeof r, 0);
  } while (len >= 2 && (r[0] != q[0] || r[1] != q[1]));
  if (len < 12) {
    puts("none timeout");
    return 1;
  }
  int answers = (r[6] << 8) | r[7];
  int off = skip_name(r, len, 12);
  off = off < 0 ? -1 : off + 4; /* the question's type and class */
  for (int k = 0; k < answers && off >= 0; k++) {
    off = skip_name(r, len, off);
    if (off < 0 || off + 10 > len) break;
    int type = (r[off] << 8) | r[off + 1];
    unsigned ttl = ((unsigned)r[off + 4] << 24) | ((unsigned)r[off + 5] << 16) | ((unsigned)r[off + 6] << 8) | r[off + 7];
    int rdlen = (r[off + 8] << 8) | r[off + 9];
    off += 10;
    if (type == 1 && rdlen == 4 && off + 4 <= len) {
      printf("%u %u.%u.%u.%u\n", ttl, r[off], r[off + 1], r[off + 2], r[off + 3]);
      return 0;
    }
    off += rdlen;
  }
  printf("none %d\n", r[3] & 15);
  return 1;
}

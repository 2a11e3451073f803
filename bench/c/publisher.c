/*
 * publisher: signed POST /apps/<id>/events as fast as the server answers, in C.
 *
 * The Python publisher (bench/publisher.py) spends tens of microseconds per request in the
 * interpreter; against a server that answers every request with `Connection: close` (soketi)
 * it also pays for a new TCP connection per request in Python, so its figure measured the
 * generator as much as the server. This one does the same work as an official SDK per request
 * (a fresh body, its MD5, an HMAC-SHA256 signature over the canonical query, docs/protocol.md
 * §6.3) on one epoll loop, one request in flight per connection, and reconnects when the server
 * closes. It reports how many connections it opened (churn) and its own CPU time, so the
 * benchmark can show that the figure is the server's and not ours.
 *
 * Build: cc -O2 -o publisher publisher.c -lcrypto   (bench/run does this when it can)
 * Run:   publisher HOST PORT APP_ID KEY SECRET CHANNEL CONNECTIONS MAX_REQUESTS MAX_SECONDS
 *        -> one JSON line on stdout when done.
 *        publisher --sign KEY SECRET PATH TIMESTAMP BODY   -> the signed query (for tests).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RBUF 16384
/* Must match bench/wire.py: event name, timestamp mark and digits, data size. */
#define EVENT_NAME "bench-event"
#define EVENT_SIZE 100

enum state { CONNECTING, WAITING, DEAD };

struct conn {
    int fd;
    enum state state;
    int64_t sent_us;
    char buf[RBUF];
    size_t len;
};

static struct sockaddr_in server;
static const char *app_id, *key, *channel;
static char path[128];
static EVP_MD_CTX *hmac_inner, *hmac_outer, *scratch;
static int ep;
static long long sent, ok, failed, connects, max_requests;
/* Connections being opened to send a request: counted against max_requests so that no connection is
   opened for a request another connection sends first (connects per request stays exact). */
static long long reserved;
static double deadline;
static int64_t *lat;
static size_t lat_len, lat_cap;
static char last_error[200];

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void hex(const unsigned char *d, unsigned n, char *out) {
    static const char H[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) { out[2 * i] = H[d[i] >> 4]; out[2 * i + 1] = H[d[i] & 15]; }
    out[2 * n] = 0;
}

/* HMAC-SHA256 with the key's inner and outer pads hashed once (RFC 2104), copied per message. */
static void hmac_init(const char *secret) {
    unsigned char k[64] = {0}, pad[64];
    size_t n = strlen(secret);
    if (n > 64) {
        unsigned int m;
        EVP_Digest(secret, n, k, &m, EVP_sha256(), NULL);
    } else {
        memcpy(k, secret, n);
    }
    hmac_inner = EVP_MD_CTX_new();
    hmac_outer = EVP_MD_CTX_new();
    scratch = EVP_MD_CTX_new();
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    EVP_DigestInit_ex(hmac_inner, EVP_sha256(), NULL);
    EVP_DigestUpdate(hmac_inner, pad, 64);
    for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    EVP_DigestInit_ex(hmac_outer, EVP_sha256(), NULL);
    EVP_DigestUpdate(hmac_outer, pad, 64);
}

static void hmac_hex(const char *msg, size_t n, char out[65]) {
    unsigned char inner[32], mac[32];
    unsigned int m;
    EVP_MD_CTX_copy_ex(scratch, hmac_inner);
    EVP_DigestUpdate(scratch, msg, n);
    EVP_DigestFinal_ex(scratch, inner, &m);
    EVP_MD_CTX_copy_ex(scratch, hmac_outer);
    EVP_DigestUpdate(scratch, inner, 32);
    EVP_DigestFinal_ex(scratch, mac, &m);
    hex(mac, 32, out);
}

/* The signed query, as bench/signing.py sign_query: keys already sorted and lower case. */
static size_t sign_query(const char *p, long ts, const char *body, size_t body_len, char *out, size_t cap) {
    unsigned char md5[16];
    unsigned int m;
    char md5hex[33], sig[65], to_sign[512];
    EVP_Digest(body, body_len, md5, &m, EVP_md5(), NULL);
    hex(md5, 16, md5hex);
    int q = snprintf(out, cap, "auth_key=%s&auth_timestamp=%ld&auth_version=1.0&body_md5=%s", key, ts, md5hex);
    int s = snprintf(to_sign, sizeof to_sign, "POST\n%s\n%s", p, out);
    hmac_hex(to_sign, (size_t)s, sig);
    return (size_t)q + (size_t)snprintf(out + q, cap - (size_t)q, "&auth_signature=%s", sig);
}

static void note_error(const char *msg) { snprintf(last_error, sizeof last_error, "%s", msg); }

static void send_request(struct conn *c) {
    char body[512], query[256], req[1024];
    long long seq = sent;
    /* data: "@t=<16 digits> seq=<8 digits> pad=xxx", EVENT_SIZE bytes, as bench/wire.py event_data. */
    char data[EVENT_SIZE + 1];
    int h = snprintf(data, sizeof data, "@t=%016lld seq=%08lld pad=", (long long)now_us(), seq % 100000000);
    memset(data + h, 'x', EVENT_SIZE - h);
    data[EVENT_SIZE] = 0;
    int blen = snprintf(body, sizeof body, "{\"name\":\"" EVENT_NAME "\",\"data\":\"%s\",\"channels\":[\"%s\"]}",
                        data, channel);
    sign_query(path, (long)time(NULL), body, (size_t)blen, query, sizeof query);
    int n = snprintf(req, sizeof req,
                     "POST %s?%s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     path, query, inet_ntoa(server.sin_addr), ntohs(server.sin_port), blen, body);
    c->sent_us = now_us();
    c->len = 0;
    c->state = WAITING;
    sent++;
    ssize_t w = write(c->fd, req, (size_t)n);
    if (w != n) { failed++; note_error("short write"); c->state = DEAD; }
}

static void open_conn(struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { note_error(strerror(errno)); c->state = DEAD; reserved--; return; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    connects++;
    c->state = CONNECTING;
    c->len = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) < 0 && errno != EINPROGRESS) {
        note_error(strerror(errno));
        c->state = DEAD;
        reserved--;
    }
}

static void close_conn(struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static int more_to_send(void) {
    return sent + reserved < max_requests && (double)now_us() / 1e6 < deadline;
}

/* Next request on this connection, or a new connection first when the old one is gone. */
static void next(struct conn *c, int reconnect) {
    if (reconnect) {
        close_conn(c);
        if (!more_to_send()) { c->state = DEAD; return; }
        reserved++;
        open_conn(c);
        return;
    }
    if (more_to_send()) send_request(c);
    else { close_conn(c); c->state = DEAD; }
}

/* A whole response in c->buf? Returns 1 and sets status, close; 0 when more bytes are needed. */
static int parse_response(struct conn *c, int *status, int *server_closes, int *error_body) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head_len = (size_t)(end - c->buf);
    size_t body_start = head_len + 4, body_len = 0;
    *status = c->len >= 12 ? atoi(c->buf + 9) : 0;
    *server_closes = 0;
    for (char *line = memmem(c->buf, head_len, "\r\n", 2); line && line < end; line = memmem(line + 2, (size_t)(end - line), "\r\n", 2)) {
        char *h = line + 2;
        if (!strncasecmp(h, "content-length:", 15)) body_len = (size_t)atol(h + 15);
        else if (!strncasecmp(h, "connection:", 11)) {
            char *v = h + 11;
            while (*v == ' ') v++;
            if (!strncasecmp(v, "close", 5)) *server_closes = 1;
        }
        if (line == end) break;
    }
    if (c->len < body_start + body_len) return 0;
    *error_body = memmem(c->buf + body_start, body_len, "\"error\"", 7) != NULL;
    return 1;
}

static void on_event(struct conn *c, uint32_t events) {
    if (c->state == CONNECTING) {
        reserved--;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            note_error(err ? strerror(err) : "connect failed");
            failed++;
            next(c, 1);
            return;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        send_request(c); /* its request was reserved when the connection was opened */
        return;
    }
    if (c->state != WAITING) return;
    ssize_t r = read(c->fd, c->buf + c->len, RBUF - c->len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r <= 0) {
        failed++;
        note_error(r == 0 ? "server closed before answering" : strerror(errno));
        next(c, 1);
        return;
    }
    c->len += (size_t)r;
    int status, server_closes, error_body;
    if (!parse_response(c, &status, &server_closes, &error_body)) {
        if (c->len == RBUF) { failed++; note_error("response too large"); next(c, 1); }
        return;
    }
    if (lat_len < lat_cap) lat[lat_len++] = now_us() - c->sent_us;
    /* soketi 1.6.1 answers errors with HTTP 200 and a JSON error body: look at the body too. */
    if (status == 200 && !error_body) ok++;
    else {
        failed++;
        char msg[120];
        snprintf(msg, sizeof msg, "HTTP %d", status);
        note_error(msg);
    }
    next(c, server_closes);
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t pct(double q) {
    if (!lat_len) return 0;
    size_t i = (size_t)(q * (double)lat_len);
    return lat[i < lat_len ? i : lat_len - 1];
}

int main(int argc, char **argv) {
    if (argc == 7 && !strcmp(argv[1], "--sign")) {
        char query[256];
        key = argv[2];
        hmac_init(argv[3]);
        sign_query(argv[4], atol(argv[5]), argv[6], strlen(argv[6]), query, sizeof query);
        puts(query);
        return 0;
    }
    if (argc != 10) {
        fprintf(stderr, "usage: %s HOST PORT APP_ID KEY SECRET CHANNEL CONNECTIONS MAX_REQUESTS MAX_SECONDS\n", argv[0]);
        return 2;
    }
    server.sin_family = AF_INET;
    server.sin_port = htons((uint16_t)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
    app_id = argv[3];
    key = argv[4];
    hmac_init(argv[5]);
    channel = argv[6];
    int nconn = atoi(argv[7]);
    max_requests = atoll(argv[8]);
    snprintf(path, sizeof path, "/apps/%s/events", app_id);
    /* One slot per request, allocated up front (bounded: a longer run keeps the first 10M). */
    lat_cap = max_requests < 10000000 ? (size_t)max_requests : 10000000;
    lat = malloc((lat_cap ? lat_cap : 1) * sizeof *lat);
    if (!lat) { perror("malloc"); return 1; }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    ep = epoll_create1(0);
    struct conn *conns = calloc((size_t)nconn, sizeof *conns);
    int64_t t0 = now_us();
    deadline = (double)t0 / 1e6 + atof(argv[9]);
    for (int i = 0; i < nconn; i++) {
        if (more_to_send()) { reserved++; open_conn(&conns[i]); }
        else conns[i].state = DEAD;
    }
    struct epoll_event evs[256];
    for (;;) {
        int live = 0;
        for (int i = 0; i < nconn; i++) live += conns[i].state != DEAD;
        if (!live) break;
        /* Bounded in time even if a server stops answering: 5 s of grace past the deadline. */
        if ((double)now_us() / 1e6 > deadline + 5.0) {
            for (int i = 0; i < nconn; i++)
                if (conns[i].state != DEAD) { failed++; note_error("no answer by the deadline"); close_conn(&conns[i]); conns[i].state = DEAD; }
            break;
        }
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
    }
    double elapsed = (double)(now_us() - t0) / 1e6;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    qsort(lat, lat_len, sizeof *lat, cmp64);
    for (char *p = last_error; *p; p++) if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = ' ';
    printf("{\"sent\":%lld,\"ok\":%lld,\"failed\":%lld,\"connects\":%lld,\"elapsed\":%.6f,\"cpu_seconds\":%.6f,"
           "\"p50_us\":%lld,\"p99_us\":%lld,\"max_us\":%lld,\"last_error\":\"%s\"}\n",
           sent, ok, failed, connects, elapsed, cpu, (long long)pct(0.5), (long long)pct(0.99),
           (long long)(lat_len ? lat[lat_len - 1] : 0), last_error);
    return 0;
}

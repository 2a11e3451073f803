/*
 * receiver: a subscriber worker in C for the fan-out scenarios, speaking the same JSON-line
 * commands as bench/worker.py (connect, stats, close, exit) for public channels only.
 *
 * Python tops out near 700k received messages/s on one core; relay can deliver more than that,
 * so the generator would become the bottleneck. This process does the same work with epoll and
 * no per-message allocation. Presence and churn stay in the Python worker.
 *
 * Build: cc -O2 -o receiver receiver.c   (bench/run does this when gcc is available)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF (256 * 1024)
#define TS_MARK "@t="
#define TS_DIGITS 16
/* Source addresses per receiver (see start_one). */
#define SOURCES 64
/* Must match bench/wire.py: fixed key, so the expected accept value is a constant. */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

enum state { CONNECTING, UPGRADING, OPEN, SUBSCRIBING, SUBSCRIBED, DEAD };

struct conn {
    int fd;
    enum state state;
    int closing;  /* closed by us: not counted as a server-side close */
    char *pending; /* bytes of an incomplete frame or handshake */
    size_t pending_len, pending_cap;
    char channel[200];
};

static struct conn **conns;
static size_t nconns, conns_cap;
static int ep;
static char rbuf[READ_BUF * 2];

/* counters, as in bench/subscriber.py Stats */
static long long received, errors, closed_by_server;
static int64_t *lat;
static size_t lat_len, lat_cap;
static char last_error[300];

/* the connect command in progress */
static struct {
    int active;
    char host[64], key[128], pattern[200], source[64];
    int port, count, first, concurrency, modulo;
    int started, in_flight, ok, failed;
    double t0, deadline;
    char req[512];
    size_t req_len;
    char errors[3][160];
    int nerrors;
} job;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void set_error(const char *msg) {
    errors++;
    snprintf(last_error, sizeof last_error, "%s", msg);
}

static void lat_push(int64_t v) {
    if (lat_len == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 1 << 16;
        lat = realloc(lat, lat_cap * sizeof *lat);
        if (!lat) { perror("realloc"); exit(1); }
    }
    lat[lat_len++] = v;
}

/* A masked client text frame with a zero mask key (payload unchanged), as bench/wire.py. */
static size_t client_frame(char *out, const char *payload, size_t n, int opcode) {
    size_t h = 0;
    out[h++] = (char)(0x80 | opcode);
    if (n < 126) out[h++] = (char)(0x80 | n);
    else { out[h++] = (char)(0x80 | 126); out[h++] = (char)(n >> 8); out[h++] = (char)(n & 0xff); }
    memset(out + h, 0, 4);
    h += 4;
    memcpy(out + h, payload, n);
    return h + n;
}

static void send_bytes(struct conn *c, const char *buf, size_t n) {
    /* Frames we send are tiny and rare; a short write means the socket is hopeless anyway. */
    ssize_t w = write(c->fd, buf, n);
    if (w != (ssize_t)n) set_error("short write");
}

static void send_text(struct conn *c, const char *payload) {
    char frame[512];
    size_t n = client_frame(frame, payload, strlen(payload), 1);
    send_bytes(c, frame, n);
}

static void finish_connect(struct conn *c, int ok, const char *why);

static void kill_conn(struct conn *c, const char *why) {
    if (c->state == DEAD) return;
    enum state was = c->state;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = DEAD;
    if (!c->closing) {
        if (was == SUBSCRIBED) closed_by_server++;
        if (why) set_error(why);
    }
    if (was != SUBSCRIBED && !c->closing) finish_connect(c, 0, why);
}

static void on_control(struct conn *c, const char *p, size_t n) {
    if (memmem(p, n, "pusher_internal:subscription_succeeded", 38)) {
        if (c->state == SUBSCRIBING) { c->state = SUBSCRIBED; finish_connect(c, 1, NULL); }
    } else if (memmem(p, n, "pusher:connection_established", 29)) {
        if (c->state == OPEN) {
            char msg[400];
            snprintf(msg, sizeof msg, "{\"event\":\"pusher:subscribe\",\"data\":{\"auth\":\"\",\"channel\":\"%s\"}}",
                     c->channel);
            c->state = SUBSCRIBING;
            send_text(c, msg);
        }
    } else if (memmem(p, n, "pusher:ping", 11)) {
        send_text(c, "{\"event\":\"pusher:pong\",\"data\":{}}");
    } else if (memmem(p, n, "error", 5)) {
        char msg[300];
        size_t m = n < 280 ? n : 280;
        memcpy(msg, p, m);
        msg[m] = 0;
        set_error(msg);
    }
}

/* Parse every whole frame in buf[0..n); return bytes consumed. */
static size_t on_frames(struct conn *c, const char *buf, size_t n) {
    int64_t t = now_us();
    size_t pos = 0;
    long long got = 0;
    while (pos + 2 <= n) {
        const unsigned char *b = (const unsigned char *)buf + pos;
        uint64_t len = b[1] & 0x7f;
        size_t start;
        if (len < 126) start = pos + 2;
        else if (len == 126) {
            if (pos + 4 > n) break;
            len = ((uint64_t)b[2] << 8) | b[3];
            start = pos + 4;
        } else {
            if (pos + 10 > n) break;
            len = 0;
            for (int i = 2; i < 10; i++) len = (len << 8) | b[i];
            start = pos + 10;
        }
        if (start + len > n) break;
        int opcode = b[0] & 0x0f;
        const char *p = buf + start;
        if (opcode == 1) {
            const char *m = memmem(p, len, TS_MARK, 3);
            if (m && m + 3 + TS_DIGITS <= p + len) {
                int64_t ts = 0;
                for (int i = 0; i < TS_DIGITS; i++) ts = ts * 10 + (m[3 + i] - '0');
                lat_push(t - ts);
                got++;
            } else {
                on_control(c, p, len);
            }
        } else if (opcode == 9) {
            char frame[256];
            size_t k = client_frame(frame, p, len < 125 ? len : 125, 10);
            send_bytes(c, frame, k);
        } else if (opcode == 8) {
            char why[160];
            int code = len >= 2 ? (((unsigned char)p[0]) << 8 | (unsigned char)p[1]) : 1005;
            snprintf(why, sizeof why, "server closed with %d", code);
            received += got;
            kill_conn(c, why);
            return n;
        }
        pos = start + len;
    }
    received += got;
    return pos;
}

static void on_readable(struct conn *c) {
    size_t have = c->pending_len;
    if (have > READ_BUF) { kill_conn(c, "frame too large"); return; }
    memcpy(rbuf, c->pending, have);
    ssize_t r = read(c->fd, rbuf + have, READ_BUF);
    if (r == 0) { kill_conn(c, "connection closed by server"); return; }
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        kill_conn(c, strerror(errno));
        return;
    }
    size_t n = have + (size_t)r, pos = 0;
    if (c->state == UPGRADING) {
        char *end = memmem(rbuf, n, "\r\n\r\n", 4);
        if (!end) goto keep;
        if (strncmp(rbuf, "HTTP/1.1 101", 12) != 0 || !memmem(rbuf, end - rbuf, WS_ACCEPT, strlen(WS_ACCEPT))) {
            kill_conn(c, "upgrade refused");
            return;
        }
        c->state = OPEN;
        pos = (size_t)(end - rbuf) + 4;
    }
    pos += on_frames(c, rbuf + pos, n - pos);
    if (c->state == DEAD) return;
keep:
    c->pending_len = n - pos;
    if (c->pending_len > c->pending_cap) {
        c->pending_cap = c->pending_len * 2;
        c->pending = realloc(c->pending, c->pending_cap);
    }
    memcpy(c->pending, rbuf + pos, c->pending_len);
}

static void reply(const char *s) {
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

static void job_reply(void) {
    char buf[1024], errs[600] = "";
    size_t off = 0;
    for (int i = 0; i < job.nerrors; i++)
        off += snprintf(errs + off, sizeof errs - off, "%s\"%s\"", i ? "," : "", job.errors[i]);
    snprintf(buf, sizeof buf, "{\"ok\":%d,\"failed\":%d,\"elapsed\":%.6f,\"errors\":[%s],\"last_error\":\"\"}",
             job.ok, job.failed, now_s() - job.t0, errs);
    job.active = 0;
    reply(buf);
}

static void start_one(void) {
    int i = job.first + job.started++;
    struct conn *c = calloc(1, sizeof *c);
    char pat[200];
    /* Channel pattern placeholders as in worker.py: {i} global index, {m} index modulo channel_mod. */
    const char *src = job.pattern;
    size_t o = 0;
    while (*src && o < sizeof pat - 24) {
        if (!strncmp(src, "{i}", 3)) { o += snprintf(pat + o, sizeof pat - o, "%d", i); src += 3; }
        else if (!strncmp(src, "{m}", 3)) { o += snprintf(pat + o, sizeof pat - o, "%d", i % job.modulo); src += 3; }
        else pat[o++] = *src++;
    }
    pat[o] = 0;
    snprintf(c->channel, sizeof c->channel, "%s", pat);
    if (nconns == conns_cap) {
        conns_cap = conns_cap ? conns_cap * 2 : 1024;
        conns = realloc(conns, conns_cap * sizeof *conns);
    }
    conns[nconns++] = c;
    job.in_flight++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) { c->state = DEAD; finish_connect(c, 0, strerror(errno)); return; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (job.source[0]) {
        /* Loopback source addresses of our own, source+1 .. source+SOURCES in turn: one address
         * reaches one server port from at most ~28k ephemeral ports, and connect()'s search for
         * a free port slows down long before that (at 19k ports in use per address it took a
         * core at 900 connects/s). The port is still picked at connect() time. */
        struct sockaddr_in src = {.sin_family = AF_INET};
        inet_pton(AF_INET, job.source, &src.sin_addr);
        src.sin_addr.s_addr = htonl(ntohl(src.sin_addr.s_addr) + 1 + (uint32_t)(i % SOURCES));
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) { kill_conn(c, strerror(errno)); return; }
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(job.port)};
    inet_pton(AF_INET, job.host, &sa.sin_addr);
    c->state = CONNECTING;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        kill_conn(c, strerror(errno));
}

static void pump_connects(void) {
    if (job.active && now_s() >= job.deadline) {
        for (size_t i = 0; i < nconns; i++)
            if (conns[i]->state != DEAD && conns[i]->state != SUBSCRIBED) kill_conn(conns[i], "timed out");
    }
    while (job.active && job.started < job.count && job.in_flight < job.concurrency && now_s() < job.deadline)
        start_one();
    if (job.active && job.in_flight == 0 && (job.started == job.count || now_s() >= job.deadline)) {
        job.failed += job.count - job.started;
        job_reply();
    }
}

static void finish_connect(struct conn *c, int ok, const char *why) {
    (void)c;
    if (!job.active) return;
    job.in_flight--;
    if (ok) job.ok++;
    else {
        job.failed++;
        if (why && job.nerrors < 3) snprintf(job.errors[job.nerrors++], 160, "%s", why);
    }
}

static void on_writable(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) { kill_conn(c, strerror(err)); return; }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->state = UPGRADING;
    send_bytes(c, job.req, job.req_len);
}

/* ---- the command protocol: flat JSON objects, keys we know, strings without escapes ---- */

static int json_str(const char *line, const char *key, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (!p) { out[0] = 0; return 0; }
    p += strlen(pat);
    size_t i = 0;
    while (*p && *p != '"' && i + 1 < cap) out[i++] = *p++;
    out[i] = 0;
    return 1;
}

static double json_num(const char *line, const char *key, double dflt) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p) return dflt;
    p += strlen(pat);
    if (!strncmp(p, "true", 4)) return 1;
    if (!strncmp(p, "false", 5)) return 0;
    return strtod(p, NULL);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void write_b64(const unsigned char *d, size_t n) {
    char out[4096 + 8];
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? B64[v & 63] : '=';
        if (o >= 4096) { fwrite(out, 1, o, stdout); o = 0; }
    }
    fwrite(out, 1, o, stdout);
}

static void json_escape_to_stdout(const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') { putchar('\\'); putchar(*s); }
        else if ((unsigned char)*s < 0x20) putchar(' ');
        else putchar(*s);
    }
}

static void cmd_stats(int reset) {
    long long open = 0;
    for (size_t i = 0; i < nconns; i++) open += conns[i]->state == SUBSCRIBED;
    printf("{\"received\":%lld,\"errors\":%lld,\"closed\":%lld,\"member_added\":0,\"member_removed\":0,\"member_frames\":0,"
           "\"joins\":0,\"open\":%lld,\"last_error\":\"",
           received, errors, closed_by_server, open);
    json_escape_to_stdout(last_error);
    printf("\",\"latencies\":\"");
    write_b64((const unsigned char *)lat, lat_len * sizeof *lat);
    printf("\"}\n");
    fflush(stdout);
    if (reset) { received = errors = closed_by_server = 0; lat_len = 0; last_error[0] = 0; }
}

static void cmd_close(void) {
    static const char close_frame[] = {(char)0x88, (char)0x82, 0, 0, 0, 0, 0x03, (char)0xe8};
    size_t n = nconns;
    for (size_t i = 0; i < nconns; i++) {
        struct conn *c = conns[i];
        if (c->state != DEAD) {
            c->closing = 1;
            if (c->state >= OPEN) { ssize_t w = write(c->fd, close_frame, sizeof close_frame); (void)w; }
            kill_conn(c, NULL);
        }
        free(c->pending);
        free(c);
    }
    nconns = 0;
    char buf[64];
    snprintf(buf, sizeof buf, "{\"closed\":%zu}", n);
    reply(buf);
}

static int handle_line(char *line) {
    char cmd[32];
    json_str(line, "cmd", cmd, sizeof cmd);
    if (!strcmp(cmd, "exit")) return 0;
    if (!strcmp(cmd, "stats")) cmd_stats((int)json_num(line, "reset", 0));
    else if (!strcmp(cmd, "close")) cmd_close();
    else if (!strcmp(cmd, "connect")) {
        char user_prefix[64];
        json_str(line, "user_prefix", user_prefix, sizeof user_prefix);
        if (user_prefix[0] || json_num(line, "watcher", 0)) {
            reply("{\"error\":\"the C receiver does public channels only; use the Python worker\"}");
            return 1;
        }
        memset(&job, 0, sizeof job);
        json_str(line, "host", job.host, sizeof job.host);
        json_str(line, "key", job.key, sizeof job.key);
        json_str(line, "channel", job.pattern, sizeof job.pattern);
        json_str(line, "source", job.source, sizeof job.source);
        job.port = (int)json_num(line, "port", 0);
        job.count = (int)json_num(line, "count", 0);
        job.first = (int)json_num(line, "first_index", 0);
        job.concurrency = (int)json_num(line, "concurrency", 200);
        job.modulo = (int)json_num(line, "channel_mod", 0);
        if (job.modulo <= 0) job.modulo = 1 << 30;
        job.t0 = now_s();
        job.deadline = job.t0 + json_num(line, "timeout", 60);
        job.req_len = (size_t)snprintf(job.req, sizeof job.req,
            "GET /app/%s?protocol=7&client=js&version=8.6.0&flash=false HTTP/1.1\r\nHost: %s:%d\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n", job.key, job.host, job.port);
        job.active = 1;
        pump_connects();
    } else {
        reply("{\"error\":\"unknown command\"}");
    }
    return 1;
}

int main(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    ep = epoll_create1(0);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct epoll_event sev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);
    static char line[1 << 16];
    size_t line_len = 0;
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, job.active ? 50 : 1000);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                ssize_t r = read(0, line + line_len, sizeof line - 1 - line_len);
                if (r == 0) return 0;  /* parent gone */
                if (r < 0) continue;
                line_len += (size_t)r;
                char *nl;
                while ((nl = memchr(line, '\n', line_len))) {
                    *nl = 0;
                    if (!handle_line(line)) return 0;
                    size_t used = (size_t)(nl - line) + 1;
                    memmove(line, nl + 1, line_len - used);
                    line_len -= used;
                }
                /* A command may have freed connections that later events of this batch point to;
                 * level-triggered epoll reports the live ones again. */
                break;
            }
            if (c->state == DEAD) continue;
            if (c->state == CONNECTING) {
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(c);
            } else if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                on_readable(c);
            }
        }
        if (job.active) pump_connects();
    }
}

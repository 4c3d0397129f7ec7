/* A plain epoll echo server, the reference loop of scripts/bench-transport.sh:
 * level-triggered epoll, non-blocking sockets, read up to 64 KiB from each
 * ready connection and write it back (what is not written at once waits in
 * a per-connection buffer and goes out on EPOLLOUT).
 *
 *   epoll_echo PORT SECONDS     listens on 127.0.0.1:PORT, exits after SECONDS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXFD 65536
#define BUF (64 * 1024)

struct conn { char *pending; size_t len; };
static struct conn conns[MAXFD];

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: epoll_echo PORT SECONDS\n"); return 2; }
    int port = atoi(argv[1]);
    time_t until = time(NULL) + atoi(argv[2]);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(l, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1024)) { perror("bind/listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = l }, evs[512];
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    static char buf[BUF];
    while (time(NULL) < until) {
        int n = epoll_wait(ep, evs, 512, 100);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAXFD) { close(c); continue; }
                    struct epoll_event ce = { .events = EPOLLIN, .data.fd = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            struct conn *k = &conns[fd];
            if (evs[i].events & EPOLLOUT && k->len) {
                ssize_t w = send(fd, k->pending, k->len, MSG_NOSIGNAL);
                if (w > 0) { memmove(k->pending, k->pending + w, k->len - w); k->len -= w; }
                if (!k->len) {
                    struct epoll_event ce = { .events = EPOLLIN, .data.fd = fd };
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ce);
                }
                continue;
            }
            if (k->len) continue; /* wait for the backlog to drain */
            ssize_t r = recv(fd, buf, BUF, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN)) { close(fd); free(k->pending); k->pending = NULL; k->len = 0; continue; }
            if (r < 0) continue;
            ssize_t w = send(fd, buf, r, MSG_NOSIGNAL);
            if (w < 0) w = 0;
            if (w < r) {
                k->pending = realloc(k->pending, r - w);
                memcpy(k->pending, buf + w, r - w);
                k->len = r - w;
                struct epoll_event ce = { .events = EPOLLIN | EPOLLOUT, .data.fd = fd };
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ce);
            }
        }
    }
    return 0;
}

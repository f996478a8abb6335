/* The floor of a compiled server, for bench/run: the netstring echo of bench/echo.py in C, served
 * as postsrsd 1.x serves tcp_table (blocking I/O, a process per connection, no event loop).
 *
 * Its CPU per request beside postsrsd's says how much of postsrsd's request is the kernel's
 * (loopback TCP, wake-ups) and how much is postsrsd's own work; beside the Python echo floors, what
 * the interpreter and event loop add before an adapter decides anything.
 *
 * Usage: echo PORT (listens on 127.0.0.1).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MAX_REQUEST = 100000 };

static int write_all(int fd, const char *data, size_t length) {
    while (length > 0) {
        ssize_t n = write(fd, data, length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        data += n;
        length -= (size_t)n;
    }
    return 0;
}

/* Answer each netstring `x` with `OK x`; any malformed input closes the connection, as ours do. */
static void serve(int fd) {
    static char in[MAX_REQUEST + 16], out[MAX_REQUEST + 32];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(fd, in + have, sizeof in - have);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        have += (size_t)n;
        for (;;) {
            char *colon = memchr(in, ':', have < 7 ? have : 7);
            if (colon == NULL) {
                if (have >= 7) return;
                break;
            }
            char *end;
            unsigned long length = strtoul(in, &end, 10);
            if (end != colon || length > MAX_REQUEST) return;
            size_t start = (size_t)(colon - in) + 1;
            if (have < start + length + 1) break;
            if (in[start + length] != ',') return;
            int m = snprintf(out, sizeof out, "%lu:OK %.*s,", length + 3, (int)length, in + start);
            if (m < 0 || write_all(fd, out, (size_t)m) < 0) return;
            size_t used = start + length + 1;
            memmove(in, in + used, have - used);
            have -= used;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
    int listener = socket(AF_INET, SOCK_STREAM, 0), on = 1;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0
        || bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 128) < 0) {
        perror("echo: listen");
        return 1;
    }
    for (;;) {
        int connection = accept(listener, NULL, NULL);
        if (connection < 0) continue;
        pid_t child = fork();
        if (child == 0) {
            close(listener);
            serve(connection);
            _exit(0);
        }
        close(connection);
    }
}

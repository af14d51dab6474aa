/*
 * Process churn for heaptrace's selection tests: prints "ready", then for
 * each "go N" line on stdin forks N children one after another. Each child
 * (no exec: it keeps this program's comm, so `--comm churn` selects it)
 * makes exactly CHILD_MMAPS anonymous mappings of 256 KiB, touches them,
 * unmaps them and exits; the parent reaps it before forking the next.
 * After each batch the parent prints "done N". End of input ends it.
 *
 *   churn
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILD_MMAPS 3
#define CHILD_LEN (256 * 1024)

static void child(void) {
    char *maps[CHILD_MMAPS];
    for (int i = 0; i < CHILD_MMAPS; i++) {
        maps[i] = mmap(NULL, CHILD_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (maps[i] == MAP_FAILED) _exit(1);
        memset(maps[i], 1, CHILD_LEN);
    }
    for (int i = 0; i < CHILD_MMAPS; i++) munmap(maps[i], CHILD_LEN);
    _exit(0);
}

int main(void) {
    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        int n = 0;
        if (sscanf(line, "go %d", &n) != 1) break;
        for (int i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid < 0) return 1;
            if (pid == 0) child();
            int status;
            if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
        }
        printf("done %d\n", n);
        fflush(stdout);
    }
    return 0;
}

/*
 * A workload whose memory behaviour is known to the byte, for heaptrace's
 * integration tests. Driven over stdin so a test can attach first:
 *
 *   prints "ready\n", then for each line read:
 *     "run"  -> performs the sequence below, prints "done\n"
 *     "exit" -> exits 0 (so does end of input)
 *
 * The sequence (all lengths whole pages; heaptrace must report these deltas
 * exactly, see heaptrace/tests/privileged.rs):
 *   1. 8 x mmap 1 MiB read-write anonymous, every page touched
 *   2. munmap 256 KiB from the middle of the first one
 *   3. mmap 4 MiB PROT_NONE, mprotect its first 1 MiB read-write, touch it
 *   4. mremap the second 1 MiB mapping to 3 MiB (may move), touch it
 *   5. brk +1 MiB, then -256 KiB
 *   6. mmap a 64 KiB file read-only, private
 *   mapped    +8M -256K +4M +2M +64K
 *   committed +8M -256K +1M +2M +64K
 *   brk       +768K
 *
 * No stdio and no malloc after start: nothing but the sequence maps memory.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KiB 1024UL
#define MiB (1024UL * KiB)

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

static void die(const char *s) {
    say("error: ");
    say(s);
    say("\n");
    _exit(1);
}

static void touch(char *p, size_t len) {
    for (size_t off = 0; off < len; off += 4096) p[off] = 1;
}

static void sequence(const char *file_path) {
    char *maps[8];
    for (int i = 0; i < 8; i++) {
        maps[i] = mmap(NULL, MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (maps[i] == MAP_FAILED) die("mmap 1 MiB");
        touch(maps[i], MiB);
    }
    if (munmap(maps[0] + 256 * KiB, 256 * KiB)) die("munmap");

    char *reserve = mmap(NULL, 4 * MiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (reserve == MAP_FAILED) die("mmap reserve");
    if (mprotect(reserve, MiB, PROT_READ | PROT_WRITE)) die("mprotect");
    touch(reserve, MiB);

    char *grown = mremap(maps[1], MiB, 3 * MiB, MREMAP_MAYMOVE);
    if (grown == MAP_FAILED) die("mremap");
    touch(grown, 3 * MiB);

    /* Align the break to a page first, so the heap grows by exactly 768 KiB. */
    uintptr_t cur = (uintptr_t)sbrk(0);
    if (cur % 4096 && sbrk(4096 - cur % 4096) == (void *)-1) die("sbrk align");
    if (sbrk(MiB) == (void *)-1) die("sbrk +1M");
    if (sbrk(-(intptr_t)(256 * KiB)) == (void *)-1) die("sbrk -256K");

    int fd = open(file_path, O_RDONLY);
    if (fd < 0) die("open file");
    char *f = mmap(NULL, 64 * KiB, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f == MAP_FAILED) die("mmap file");
    close(fd);
}

int main(int argc, char **argv) {
    /* The 64 KiB file, made before "ready" so its setup is not measured. */
    const char *path = argc > 1 ? argv[1] : "/tmp/memwork.dat";
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 64 * KiB)) die("create file");
    close(fd);

    say("ready\n");
    char line[64];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(0, line + len, 1);
        if (n <= 0) return 0;
        if (line[len] != '\n' && len < sizeof line - 1) {
            len++;
            continue;
        }
        line[len] = 0;
        len = 0;
        if (!strcmp(line, "run")) {
            sequence(path);
            say("done\n");
        } else if (!strcmp(line, "exit")) {
            return 0;
        }
    }
}

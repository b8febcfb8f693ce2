/* Tests that run a part in a child process, watched: a hang there (a lock
 * held for good, an address space used up) fails the test instead of
 * stopping the run. */
#define _GNU_SOURCE /* syscall */
#include "check.h"

#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHILD_WAIT_MS 10000

int check_wait_child(pid_t pid) {
    int status = 0;
    for (int ms = 0; ms < CHILD_WAIT_MS; ms++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    fprintf(stderr, "child %d hung: killed after %d ms\n", (int)pid,
            CHILD_WAIT_MS);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* _exit: no destructors, no leak check of the parent's blocks. Under
 * ThreadSanitizer past its _exit too, whose check found the parent's
 * threads unjoined in the child ("thread leak") and made every child of a
 * threaded parent fail with status 66. */
_Noreturn void check_child_exit(int status) {
#if CHECK_TSAN
    syscall(SYS_exit_group, status);
#endif
    _exit(status);
}

int check_in_child(int (*fn)(void *), void *arg) {
    pid_t pid = fork();
    if (pid == 0)
        check_child_exit(fn(arg));
    return pid < 0 ? -1 : check_wait_child(pid);
}

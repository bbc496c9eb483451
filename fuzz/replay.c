/* replay.c - run a fuzz target over its corpus and crash reproducers.
 *
 * Built with the configured compiler (and sanitizers, if enabled) for
 * `make check`: without arguments it feeds every file of
 * FUZZ_DIR/corpus/FUZZ_NAME/ and FUZZ_DIR/regress/FUZZ_NAME/ to the target's
 * LLVMFuzzerTestOneInput, each in a child process so one bad input is one
 * failed test, and prints TAP.  With arguments it replays those files or
 * directories instead; -n runs them in this process (for gdb or valgrind).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

#define REPLAY_TIMEOUT_S 60   /* one input taking longer is a hang */

typedef struct {
  char **paths;
  size_t n, cap;
} List;

static void
add_path(List *l, const char *p)
{
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 64;
    char **np = realloc(l->paths, cap * sizeof *np);

    if (!np) {
      perror("replay");
      exit(99);
    }
    l->paths = np;
    l->cap = cap;
  }
  l->paths[l->n] = strdup(p);
  if (!l->paths[l->n]) {
    perror("replay");
    exit(99);
  }
  l->n++;
}

static int
cmp_path(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Add a file, or every regular file of a directory (sorted; hidden files and
   README skipped).  A missing directory adds nothing. */
static void
collect(List *l, const char *p, int must_exist)
{
  struct stat st;
  DIR *d;
  struct dirent *e;
  size_t first = l->n;

  if (stat(p, &st) != 0) {
    if (must_exist) {
      fprintf(stderr, "replay: %s: %s\n", p, strerror(errno));
      exit(99);
    }
    return;
  }
  if (!S_ISDIR(st.st_mode)) {
    add_path(l, p);
    return;
  }
  d = opendir(p);
  if (!d) {
    fprintf(stderr, "replay: %s: %s\n", p, strerror(errno));
    exit(99);
  }
  while ((e = readdir(d)) != NULL) {
    char full[4096];

    if (e->d_name[0] == '.' || strcmp(e->d_name, "README") == 0)
      continue;
    snprintf(full, sizeof full, "%s/%s", p, e->d_name);
    if (stat(full, &st) == 0 && S_ISREG(st.st_mode))
      add_path(l, full);
  }
  closedir(d);
  qsort(l->paths + first, l->n - first, sizeof *l->paths, cmp_path);
}

static int
read_all(const char *path, uint8_t **data, size_t *len)
{
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  size_t cap = 0, n = 0;

  if (!f)
    return -1;
  for (;;) {
    if (n == cap) {
      uint8_t *nb = realloc(buf, cap ? 2 * cap : 4096);
      if (!nb) {
        free(buf);
        fclose(f);
        return -1;
      }
      buf = nb;
      cap = cap ? 2 * cap : 4096;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0)
      break;
  }
  fclose(f);
  *data = buf;
  *len = n;
  return 0;
}

/* Run one input here; 0, or -1 if it cannot be read. */
static int
run_one(const char *path)
{
  uint8_t *data;
  size_t len;

  if (read_all(path, &data, &len) != 0) {
    fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(errno));
    return -1;
  }
  LLVMFuzzerTestOneInput(data, len);
  free(data);
  return 0;
}

/* Run one input in a child; returns 1 if it passed. */
static int
run_forked(const char *path, char *why, size_t whylen)
{
  pid_t pid;
  int status;

  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0) {
    snprintf(why, whylen, "fork: %s", strerror(errno));
    return 0;
  }
  if (pid == 0) {
    alarm(REPLAY_TIMEOUT_S);
    exit(run_one(path) == 0 ? 0 : 98);   /* exit, not _exit: LeakSanitizer runs */
  }
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      snprintf(why, whylen, "waitpid: %s", strerror(errno));
      return 0;
    }
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return 1;
  if (WIFSIGNALED(status))
    snprintf(why, whylen, "killed by signal %d%s", WTERMSIG(status),
             WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
  else
    snprintf(why, whylen, "exit status %d", WEXITSTATUS(status));
  return 0;
}

int
main(int argc, char **argv)
{
  List l = { NULL, 0, 0 };
  int in_process = 0, failed = 0, first = 1;
  const char *dir = getenv("FUZZ_DIR") ? getenv("FUZZ_DIR") : FUZZ_DIR;
  char p[4096];

  if (argc > 1 && strcmp(argv[1], "-n") == 0) {
    in_process = 1;
    first = 2;
  }
  if (argc > first) {
    for (int i = first; i < argc; i++)
      collect(&l, argv[i], 1);
  } else {
    snprintf(p, sizeof p, "%s/corpus/%s", dir, FUZZ_NAME);
    collect(&l, p, 1);
    snprintf(p, sizeof p, "%s/regress/%s", dir, FUZZ_NAME);
    collect(&l, p, 0);
  }

  printf("1..%zu\n", l.n);
  for (size_t i = 0; i < l.n; i++) {
    const char *name = l.paths[i];
    size_t dl = strlen(dir);
    char why[128] = "";
    int good;

    if (strncmp(name, dir, dl) == 0 && name[dl] == '/')
      name += dl + 1;
    if (in_process)
      good = run_one(l.paths[i]) == 0;
    else
      good = run_forked(l.paths[i], why, sizeof why);
    printf("%s %zu - %s %s%s%s\n", good ? "ok" : "not ok", i + 1, FUZZ_NAME, name,
           good ? "" : ": ", why);
    failed += !good;
    free(l.paths[i]);
  }
  free(l.paths);
  if (failed)
    printf("# %d of %zu inputs failed\n", failed, l.n);
  return failed ? 1 : 0;
}

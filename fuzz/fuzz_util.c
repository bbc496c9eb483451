/* fuzz_util.c - helpers shared by the fuzz targets (see fuzz.h). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include "fuzz.h"

static char temp_dir[256];

const char *
__lsan_default_suppressions(void)
{
  return "leak:strbuf_append\nleak:libconfig_yylex\n";
}
static pid_t temp_owner;

void
FUZZ_Fail(const char *file, int line, const char *what)
{
  fprintf(stderr, "%s:%d: fuzz invariant broken: %s\n", file, line, what);
  fflush(stderr);
  abort();
}

static void
remove_temp_dir(void)
{
  DIR *d;
  struct dirent *e;
  char path[512];

  if (!temp_dir[0] || getpid() != temp_owner)
    return;
  d = opendir(temp_dir);
  if (d) {
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        continue;
      snprintf(path, sizeof path, "%s/%s", temp_dir, e->d_name);
      unlink(path);
    }
    closedir(d);
  }
  rmdir(temp_dir);
  temp_dir[0] = '\0';
}

const char *
FUZZ_TempDir(void)
{
  const char *base;

  if (temp_dir[0])
    return temp_dir;
  base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
  snprintf(temp_dir, sizeof temp_dir, "%s/wavelock-fuzz-XXXXXX", base ? base : "/tmp");
  if (!mkdtemp(temp_dir)) {
    fprintf(stderr, "fuzz: cannot create %s: %s\n", temp_dir, strerror(errno));
    abort();
  }
  temp_owner = getpid();
  atexit(remove_temp_dir);
  return temp_dir;
}

const char *
FUZZ_MemFile(const uint8_t *data, size_t size)
{
  static int fd = -1;
  static char path[64];
  size_t done = 0;

  if (fd < 0) {
    fd = memfd_create("wavelock-fuzz", MFD_CLOEXEC);
    if (fd < 0)
      return NULL;
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  if (ftruncate(fd, 0) != 0)
    return NULL;
  while (done < size) {
    ssize_t n = pwrite(fd, data + done, size - done, (off_t)done);

    if (n < 0) {
      if (errno == EINTR)
        continue;
      return NULL;
    }
    done += (size_t)n;
  }
  return path;
}

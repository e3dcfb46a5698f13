/*
 * outfile.c: output files that replace only ordinary files (outfile.h).
 *
 * Everything here runs as root on the machines the project is used on, so
 * `-o /dev/null` through a rename would replace the machine's /dev/null with
 * a regular file, and a symlink planted at PATH.tmp would be written
 * through.  The checks are made with lstat, never following a link, once
 * before any work (outfile_check) and again when the file is opened.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "outfile.h"
#include "rt.h"

static const char *kind_of(mode_t m)
{
  if (S_ISDIR(m)) return "a folder";
  if (S_ISLNK(m)) return "a symbolic link";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

static char *tmp_name(const char *path)
{
  return rt_concat(path, ".tmp", "a path");
}

/* 0 when p does not exist or is a regular file; else an error naming it. */
static int replaceable(const char *shown, const char *p, char *err, size_t errlen)
{
  struct stat st;
  if (lstat(p, &st) != 0) {
    if (errno == ENOENT)
      return 0;
    snprintf(err, errlen, "%s: error: cannot write %s: %s", shown, p, strerror(errno));
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: error: refusing to write %s: it exists and is %s, not a regular file",
             shown, p, kind_of(st.st_mode));
    return -1;
  }
  return 0;
}

int outfile_check(const char *path, char *err, size_t errlen)
{
  if (!path || !*path) {
    snprintf(err, errlen, "lmc: error: an output path is empty");
    return -1;
  }
  char *tmp = tmp_name(path);
  int rc = -1;
  if (replaceable(path, path, err, errlen) < 0 || replaceable(path, tmp, err, errlen) < 0)
    goto done;
  /* the folder must take PATH.tmp: probe it now, not at the first save */
  struct stat st;
  if (lstat(tmp, &st) == 0) {
    if (access(tmp, W_OK) != 0) {
      snprintf(err, errlen, "%s: error: cannot write %s: %s", path, tmp, strerror(errno));
      goto done;
    }
  } else {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0) {
      snprintf(err, errlen, "%s: error: cannot create %s: %s", path, tmp, strerror(errno));
      goto done;
    }
    close(fd);
    unlink(tmp);
  }
  rc = 0;
done:
  free(tmp);
  return rc;
}

int outfile_open(OutFile *o, const char *path, char *err, size_t errlen)
{
  *o = (OutFile){ 0 };
  if (outfile_check(path, err, errlen) < 0)
    return -1;
  o->path = rt_strdup(path, "a path");
  o->tmp = tmp_name(path);
  if (unlink(o->tmp) != 0 && errno != ENOENT) {   /* a stale regular PATH.tmp */
    snprintf(err, errlen, "%s: error: cannot remove %s: %s", path, o->tmp, strerror(errno));
    goto fail;
  }
  int fd = open(o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (fd < 0) {
    snprintf(err, errlen, "%s: error: cannot create %s: %s", path, o->tmp, strerror(errno));
    goto fail;
  }
  if (!(o->f = fdopen(fd, "wb"))) {
    snprintf(err, errlen, "%s: error: cannot create %s: %s", path, o->tmp, strerror(errno));
    close(fd);
    unlink(o->tmp);
    goto fail;
  }
  return 0;
fail:
  free(o->path);
  free(o->tmp);
  *o = (OutFile){ 0 };
  return -1;
}

static void fsync_dir(const char *path)
{
  char *dir = rt_strdup(path, "a path");
  char *slash = strrchr(dir, '/');
  if (slash)
    slash[slash == dir ? 1 : 0] = '\0';
  int fd = open(slash ? dir : ".", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(dir);
}

int outfile_commit(OutFile *o, bool durable, char *err, size_t errlen)
{
  FILE *f = o->f;
  o->f = NULL;
  int bad = fflush(f) != 0 || ferror(f);
  if (!bad && durable)
    bad = fsync(fileno(f)) != 0;
  int saved = errno;
  if (fclose(f) != 0 && !bad) {
    bad = 1;
    saved = errno;
  }
  if (bad) {
    snprintf(err, errlen, "%s: error: cannot write %s: %s", o->path, o->tmp, strerror(saved ? saved : EIO));
    goto fail;
  }
  /* PATH may have been replaced by something else while we wrote */
  if (replaceable(o->path, o->path, err, errlen) < 0)
    goto fail;
  if (rename(o->tmp, o->path) != 0) {
    snprintf(err, errlen, "%s: error: cannot rename %s to it: %s", o->path, o->tmp, strerror(errno));
    goto fail;
  }
  if (durable)
    fsync_dir(o->path);
  free(o->path);
  free(o->tmp);
  *o = (OutFile){ 0 };
  return 0;
fail:
  outfile_abort(o);
  return -1;
}

void outfile_abort(OutFile *o)
{
  if (o->f)
    fclose(o->f);
  if (o->tmp)
    unlink(o->tmp);
  free(o->path);
  free(o->tmp);
  *o = (OutFile){ 0 };
}

FILE *outfile_open_log(const char *path, bool append, char *err, size_t errlen)
{
  if (outfile_check(path, err, errlen) < 0)
    return NULL;
  int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | (append ? O_APPEND : 0);
  int fd = open(path, flags, 0666);
  if (fd < 0) {
    snprintf(err, errlen, "%s: error: cannot write: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: error: refusing to write it: not a regular file", path);
    close(fd);
    return NULL;
  }
  FILE *f = NULL;
  if ((append || ftruncate(fd, 0) == 0) && fcntl(fd, F_SETFL, flags & ~O_NONBLOCK & ~O_CREAT) == 0)
    f = fdopen(fd, append ? "ab" : "wb");
  if (!f) {
    snprintf(err, errlen, "%s: error: cannot write: %s", path, strerror(errno));
    close(fd);
  }
  return f;
}

bool outfile_same_file(const char *a, const char *b)
{
  struct stat sa, sb;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int outfile_close_stdout(const char *name)
{
  int bad = fflush(stdout) != 0 || ferror(stdout);
  int saved = errno;
  if (fclose(stdout) != 0 && !bad) {
    bad = 1;
    saved = errno;
  }
  if (bad) {
    fprintf(stderr, "%s: error: cannot write standard output: %s\n", name, strerror(saved ? saved : EIO));
    return -1;
  }
  return 0;
}

/*
 * outfile.h: every file the project's programs write (lmc's -o, a
 * trainer's --save, --log-csv, generate's --outf) goes through these
 * calls, so that no output option can replace what is not an ordinary
 * file of the user's.
 *
 *   outfile_check(path)    before any work: refuses an empty path and an
 *                          existing path that is not a regular file (a
 *                          device node, FIFO, socket, folder or symlink),
 *                          and a folder that cannot take PATH.tmp
 *   outfile_open(o, path)  checks again, then creates PATH.tmp exclusively
 *                          (O_EXCL | O_NOFOLLOW, after removing a stale
 *                          regular PATH.tmp): nothing is written through
 *                          a link or into a device planted at PATH.tmp
 *   outfile_commit(o)      flushes, checks every write, optionally fsyncs,
 *                          and renames PATH.tmp over PATH; PATH is either
 *                          the old file or the complete new one
 *   outfile_abort(o)       closes and removes PATH.tmp
 *   outfile_open_log(path) a log written as it goes (--log-csv): opened in
 *                          place without following a link or blocking, and
 *                          kept only when it is a regular file
 *
 * Errors are "PATH: error: ..." in err (errlen bytes) and a -1 return.
 */
#ifndef OUTFILE_H
#define OUTFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
  char *path;            /* the destination */
  char *tmp;             /* PATH.tmp while open, else NULL */
  FILE *f;
} OutFile;

int outfile_check(const char *path, char *err, size_t errlen);
int outfile_open(OutFile *o, const char *path, char *err, size_t errlen);
int outfile_commit(OutFile *o, bool durable, char *err, size_t errlen);
void outfile_abort(OutFile *o);

FILE *outfile_open_log(const char *path, bool append, char *err, size_t errlen);

/* Whether a and b name the same existing file (device and inode). */
bool outfile_same_file(const char *a, const char *b);

/* Flushes and checks stdout at exit: a program whose output was lost
 * (a full disk, a closed pipe) must not exit 0.  Returns -1 and prints
 * "NAME: error: cannot write standard output: ..." when it was. */
int outfile_close_stdout(const char *name);

#endif

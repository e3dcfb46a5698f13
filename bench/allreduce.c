/*
 * allreduce.c: the cost of summing a float block over the ranks with
 * MPI_Allreduce, for bench/bench_mpi.py's projection to more ranks.
 *
 *   mpirun -np N allreduce [-r REPEATS] BYTES...
 *
 * For each size: one call to warm up, then REPEATS (default 20) calls,
 * each timed between two barriers as the slowest rank saw it; rank 0
 * prints one line per size, "BYTES MEDIAN_S MIN_S MAX_S".  Built by
 * bench_mpi.py with mpicc.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int by_value(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int repeats = 20, first = 1;
  if (argc > 2 && !strcmp(argv[1], "-r")) {
    repeats = atoi(argv[2]);
    first = 3;
  }
  if (repeats < 1 || first >= argc) {
    if (!rank) fprintf(stderr, "usage: mpirun -np N allreduce [-r REPEATS] BYTES...\n");
    MPI_Finalize();
    return 2;
  }
  double *t = malloc((size_t)repeats * sizeof *t);
  for (int a = first; a < argc; a++) {
    long n = atol(argv[a]) / (long)sizeof(float);
    if (n < 1 || n > (1L << 30)) {
      if (!rank) fprintf(stderr, "allreduce: %s: give a size of 4 bytes to 4 GiB\n", argv[a]);
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
    float *v = calloc((size_t)n, sizeof *v);
    for (int r = -1; r < repeats; r++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      double dt = MPI_Wtime() - t0, slowest;
      MPI_Allreduce(&dt, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (r >= 0) t[r] = slowest;
    }
    qsort(t, (size_t)repeats, sizeof *t, by_value);
    if (!rank) printf("%ld %.9g %.9g %.9g\n", n * (long)sizeof(float), t[repeats / 2], t[0], t[repeats - 1]);
    free(v);
  }
  free(t);
  MPI_Finalize();
  return 0;
}

/*
 * passes.c: the table of optimization passes, in the order they run.
 *
 * `-O0` runs none, `-O1` those of level 1, `-O2` (the default) all;
 * --disable-pass / --enable-pass switch single passes by name.
 */
#include <string.h>
#include "lmc.h"

const Pass passes[] = {
  {"dce", "delete nodes that no output depends on", 1, dce},
};

const int npasses = sizeof passes / sizeof passes[0];

const Pass *find_pass(const char *name)
{
  for (int i = 0; i < npasses; i++)
    if (!strcmp(passes[i].name, name))
      return &passes[i];
  return NULL;
}

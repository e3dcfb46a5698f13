/*
 * lua_source.c: reading graph files and modules, and require().
 *
 * The graph file and every module are read only from regular files of at
 * most SOURCE_MAX bytes and loaded as text chunks named "@path", so Lua's
 * messages name the file.  require(name) is the sandbox's own: a dotted
 * name resolved to <graph file's folder>/name.lua, then
 * <libdir>/name.lua, run once (its result kept in the registry table
 * lmc.loaded; a module requiring itself again is an error).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include "front.h"

static bool valid_module_name(const char *s)
{
  if (!*s || *s == '.')
    return false;
  for (const char *p = s; *p; p++) {
    if (*p == '.' && (p[1] == '.' || p[1] == 0))
      return false;
    if (*p != '.' && *p != '_' && !isalnum((unsigned char)*p))
      return false;
  }
  return true;
}

/* Reads a graph file or module: only a regular file, of at most
 * SOURCE_MAX bytes.  The open does not block (a FIFO would wait for a
 * writer) and the checks are made on the opened file, so nothing can be
 * swapped in between.  Returns NULL with the reason in why ("is not a
 * regular file ..."). */
enum { SOURCE_MAX = 4 << 20 };

static char *read_source(const char *path, size_t *len, char *why, size_t whylen)
{
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    snprintf(why, whylen, "cannot read: %s", strerror(errno));
  } else if (S_ISDIR(st.st_mode)) {
    snprintf(why, whylen, "is a folder, not a Lua source file");
  } else if (!S_ISREG(st.st_mode)) {
    snprintf(why, whylen, "is not a regular file; graph files and modules are read only from "
             "regular files");
  } else if (st.st_size > SOURCE_MAX) {
    snprintf(why, whylen, "is %lld bytes; graph files and modules may be at most %d bytes",
             (long long)st.st_size, SOURCE_MAX);
  } else {
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = arena_calloc(cap, 1);   /* arena: a caught error frees it */
    ssize_t k;
    while ((k = read(fd, buf + n, cap - n)) != 0) {
      if (k < 0 && errno == EINTR)
        continue;
      if (k < 0 || (n += (size_t)k) > SOURCE_MAX)
        break;
      if (n == cap)
        buf = arena_realloc(buf, cap = 2 * cap);
    }
    if (k == 0) {
      close(fd);
      *len = n;
      return buf;
    }
    if (k < 0)
      snprintf(why, whylen, "cannot read: %s", strerror(errno));
    else
      snprintf(why, whylen, "grew past %d bytes while it was read", SOURCE_MAX);
  }
  if (fd >= 0)
    close(fd);
  return NULL;
}

/* Loads a file as a text chunk named "@path"; a file that cannot be read
 * (reported at the require line when required) and syntax errors end the
 * program. */
void load_file(lua_State *L, const char *path, const char *required_as)
{
  size_t len;
  char why[256];
  char *src = read_source(path, &len, why, sizeof why);
  if (!src && required_as)
    ferr(L, "require '%s': %s %s", required_as, path, why);
  if (!src)
    fail_at(path, 0, why);
  if (len > 0 && src[0] == LUA_SIGNATURE[0])
    fail_at(path, 0, "binary chunks are not allowed; a graph file is Lua source");
  lua_pushfstring(L, "@%s", path);
  int rc = luaL_loadbufferx(L, src, len, lua_tostring(L, -1), "t");
  if (rc != LUA_OK)
    fail_lua(front(L), lua_tostring(L, -1));
  lua_remove(L, -2);
}

/* Whether anything is at path (stat does not open it: a FIFO or a device
 * is found here and refused by read_source). */
static bool file_exists(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0;
}

/* require(name): a Lua file from the graph's folder or the library folder. */
int l_require(lua_State *L)
{
  Front *F = front(L);
  if (lua_type(L, 1) != LUA_TSTRING)
    ferr(L, "require: module name must be a string, got %s", luaL_typename(L, 1));
  const char *name = lua_tostring(L, 1), *as = safe_text(name);
  if (name[0] == '/' || strchr(name, '/') || strchr(name, '\\'))
    ferr(L, "require '%s': paths are not allowed; name a module such as 'nn' "
         "(found in the graph's folder or %s)", as, F->libdir);
  if (strstr(name, ".."))
    ferr(L, "require '%s': '..' is not allowed; modules come only from the graph's folder or %s",
         as, F->libdir);
  if (!valid_module_name(name) || strlen(name) > GRAPH_NAME_MAX || strlen(name) != lua_rawlen(L, 1))
    ferr(L, "require '%s': a module name is letters, digits and '_' joined by dots, "
         "at most %d characters", as, GRAPH_NAME_MAX);
  lua_getfield(L, LUA_REGISTRYINDEX, "lmc.loaded");
  lua_getfield(L, -1, name);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) == LUA_TLIGHTUSERDATA)
      ferr(L, "require '%s': circular require", name);
    return 1;
  }
  lua_pop(L, 1);
  char *rel = arena_strdup(name);
  for (char *p = rel; *p; p++)
    if (*p == '.')
      *p = '/';
  char *path = arena_printf("%s%s.lua", F->dir, rel);
  if (!file_exists(path)) {
    path = arena_printf("%s/%s.lua", F->libdir, rel);
    if (!file_exists(path))
      ferr(L, "require '%s': no %s%s.lua or %s; graph files can require only Lua files from "
           "these two folders (no C modules or standard libraries)",
           name, F->dir, rel, path);
  }
  lua_pushlightuserdata(L, F);         /* loading: catches cycles */
  lua_setfield(L, -2, name);
  load_file(L, path, name);
  lua_pushstring(L, name);
  lua_pushstring(L, path);
  call(L, 2, 1);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, name);
  return 1;
}

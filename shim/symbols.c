/* symbols.c: names for guest addresses (qemu.symbolize). User mode: the files the guest mapped,
 * found in QEMU's own /proc/self/maps (the guest lives in QEMU's address space, guest address A
 * at host address A + guest_base), their function symbols read once per file with libelf
 * (.symtab and .dynsym, and the .symtab of a /usr/lib/debug/.build-id file when one is
 * installed), relocated by each load's bias. The module list is read again whenever an address
 * falls outside every known module. Any mode: symbol tables a script loads (a System.map or an
 * ELF file such as vmlinux, with absolute addresses), consulted first.
 * Only Lua calls in here, always under qlua's lock: no locking of its own.
 * Owns: the module list, the per-file symbol cache, the loaded tables. Must not touch: argument
 * shapes and their messages (lua/qemu/init.lua checks them; C takes positional arguments and
 * checks only what memory safety needs). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gelf.h>
#include <libelf.h>

#include "symbols.h"
#include "gate.h"
#include "host.h"
#include "value.h"

#define PAGE 4096u
#define UNSIZED UINT64_MAX /* a symbol without a size or section: it runs to the next one */

typedef struct {
    uint64_t value; /* the symbol's address in the file (absolute for loaded tables) */
    uint64_t end;   /* first address past it */
    const char *name;
    int rank;       /* among symbols at one address, the higher rank names it */
} sym_t;

typedef struct {
    GArray *syms; /* sym_t, sorted by value, one per address */
    GStringChunk *names;
} symtab;

typedef struct {
    uint64_t offset, vaddr, filesz;
    bool exec;
} segment;

/* One file, parsed once. */
typedef struct {
    bool elf;
    uint16_t type;   /* e_type */
    GArray *loads;   /* segment: the PT_LOAD program headers */
    symtab tab;
    uint64_t lo, hi; /* the hull of its allocated sections (hi exclusive; lo == hi: none) */
} elf_file;

/* One load of a file in the guest's address space (guest addresses). */
typedef struct {
    char *path;
    uint64_t base, stop;          /* the mapping of file offset 0 (or where it would be) .. end */
    uint64_t first, first_offset; /* the load's first mapping and its file offset */
    unsigned long inode;
    elf_file *file; /* NULL until the first lookup in it */
    uint64_t bias;  /* guest address - file address */
} module;

/* A table loaded by qemu.symbolize_load. */
typedef struct {
    char *path, *name;
    elf_file *file; /* its symbols and extent */
} table;

static GHashTable *files;  /* "path\nINODE" -> elf_file * (NULL: unreadable or not ELF) */
static GArray *modules;    /* module, in address order */
static GPtrArray *tables;  /* table * */
static guint last_hit;     /* index into modules of the last lookup's module */
static bool base_known;
static uint64_t guest_base;

/* ---- symbol tables ---- */

static void symtab_init(symtab *t)
{
    t->syms = g_array_new(FALSE, FALSE, sizeof(sym_t));
    t->names = g_string_chunk_new(4096);
}

static int leading_underscores(const char *s)
{
    int n = 0;
    while (s[n] == '_') {
        n++;
    }
    return n;
}

static gint by_value_then_rank(gconstpointer pa, gconstpointer pb)
{
    const sym_t *a = pa, *b = pb;
    if (a->value != b->value) {
        return a->value < b->value ? -1 : 1;
    }
    if (a->rank != b->rank) {
        return b->rank - a->rank;
    }
    int ua = leading_underscores(a->name), ub = leading_underscores(b->name);
    if (ua != ub) {
        return ua - ub;
    }
    return strcmp(a->name, b->name);
}

/* Sorts, then keeps one symbol per address (the best ranked) with the longest extent there. */
static void symtab_finish(symtab *t)
{
    g_array_sort(t->syms, by_value_then_rank);
    guint out = 0;
    for (guint i = 0; i < t->syms->len; i++) {
        sym_t *s = &g_array_index(t->syms, sym_t, i);
        if (out > 0) {
            sym_t *prev = &g_array_index(t->syms, sym_t, out - 1);
            if (prev->value == s->value) {
                if (prev->end != UNSIZED && (s->end == UNSIZED || s->end > prev->end)) {
                    prev->end = s->end;
                }
                continue;
            }
        }
        g_array_index(t->syms, sym_t, out++) = *s;
    }
    g_array_set_size(t->syms, out);
}

/* The symbol covering address v of the file, or NULL. */
static const sym_t *symtab_find(const symtab *t, uint64_t v)
{
    guint lo = 0, hi = t->syms->len; /* the first symbol above v is in [lo, hi] */
    while (lo < hi) {
        guint mid = lo + (hi - lo) / 2;
        if (g_array_index(t->syms, sym_t, mid).value <= v) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == 0) {
        return NULL;
    }
    const sym_t *s = &g_array_index(t->syms, sym_t, lo - 1);
    return s->end == UNSIZED || v < s->end ? s : NULL;
}

/* ---- ELF files (libelf) ---- */

typedef struct {
    uint64_t addr, size;
    bool alloc;
} section;

static bool libelf_ready(void)
{
    static int state; /* 0: not tried, 1: ready, -1: failed */
    if (state == 0) {
        state = elf_version(EV_CURRENT) == EV_NONE ? -1 : 1;
    }
    return state == 1;
}

static GArray *read_sections(Elf *e)
{
    GArray *out = g_array_new(FALSE, TRUE, sizeof(section));
    size_t n = 0;
    if (elf_getshdrnum(e, &n) != 0) {
        return out;
    }
    g_array_set_size(out, n);
    for (size_t i = 0; i < n; i++) {
        Elf_Scn *scn = elf_getscn(e, i);
        GElf_Shdr sh;
        if (scn && gelf_getshdr(scn, &sh)) {
            section *s = &g_array_index(out, section, i);
            s->addr = sh.sh_addr;
            s->size = sh.sh_size;
            s->alloc = (sh.sh_flags & SHF_ALLOC) != 0;
        }
    }
    return out;
}

/* Adds the function symbols of every SHT_SYMTAB (and, if dynsym, SHT_DYNSYM) section of e.
 * Returns whether e had a SHT_SYMTAB with symbols. */
static bool add_symbols(Elf *e, symtab *t, bool dynsym)
{
    GArray *sections = read_sections(e);
    bool had_symtab = false;
    Elf_Scn *scn = NULL;
    while ((scn = elf_nextscn(e, scn)) != NULL) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh) || sh.sh_entsize == 0 || sh.sh_type == SHT_NOBITS) {
            continue;
        }
        if (sh.sh_type != SHT_SYMTAB && !(dynsym && sh.sh_type == SHT_DYNSYM)) {
            continue;
        }
        Elf_Data *data = elf_getdata(scn, NULL);
        if (!data) {
            continue;
        }
        size_t count = sh.sh_size / sh.sh_entsize;
        bool from_symtab = sh.sh_type == SHT_SYMTAB;
        for (size_t i = 0; i < count; i++) {
            GElf_Sym s;
            if (!gelf_getsym(data, (int)i, &s)) {
                break;
            }
            int kind = GELF_ST_TYPE(s.st_info);
            if ((kind != STT_FUNC && kind != STT_GNU_IFUNC) || s.st_shndx == SHN_UNDEF
                || s.st_value == 0) {
                continue;
            }
            const char *name = elf_strptr(e, sh.sh_link, s.st_name);
            if (!name || !*name) {
                continue;
            }
            if (from_symtab) {
                had_symtab = true;
            }
            /* glibc's .symtab spells versioned definitions "memcpy@@GLIBC_2.14": the version
             * goes (the function is memcpy) */
            const char *at = strchr(name + 1, '@');
            char *bare = at ? g_strndup(name, (gsize)(at - name)) : NULL;
            sym_t out = {.value = s.st_value, .end = UNSIZED};
            if (s.st_size > 0) {
                out.end = s.st_value + s.st_size;
            } else if (s.st_shndx < sections->len && s.st_shndx < SHN_LORESERVE) {
                section *sec = &g_array_index(sections, section, s.st_shndx);
                if (sec->alloc && sec->addr <= s.st_value && s.st_value < sec->addr + sec->size) {
                    out.end = sec->addr + sec->size;
                }
            }
            int bind = GELF_ST_BIND(s.st_info);
            out.rank = (bind == STB_GLOBAL ? 30 : bind == STB_WEAK ? 20 : 10) + (from_symtab ? 1 : 0);
            out.name = g_string_chunk_insert_const(t->names, bare ? bare : name);
            g_free(bare);
            g_array_append_val(t->syms, out);
        }
    }
    g_array_free(sections, TRUE);
    return had_symtab;
}

/* The GNU build id of e as lowercase hex (g_free it), or NULL. */
static char *build_id(Elf *e)
{
    Elf_Scn *scn = NULL;
    while ((scn = elf_nextscn(e, scn)) != NULL) {
        GElf_Shdr sh;
        if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_NOTE) {
            continue;
        }
        Elf_Data *data = elf_getdata(scn, NULL);
        size_t off = 0, name_off, desc_off;
        GElf_Nhdr nh;
        while (data && (off = gelf_getnote(data, off, &nh, &name_off, &desc_off)) > 0) {
            if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && nh.n_descsz > 1
                && nh.n_descsz <= 64 && memcmp((char *)data->d_buf + name_off, "GNU", 4) == 0) {
                const unsigned char *id = (const unsigned char *)data->d_buf + desc_off;
                GString *hex = g_string_new(NULL);
                for (size_t i = 0; i < nh.n_descsz; i++) {
                    g_string_append_printf(hex, "%02x", id[i]);
                }
                return g_string_free(hex, FALSE);
            }
        }
    }
    return NULL;
}

/* Opens path as ELF: the Elf handle (elf_end it, then close *fd), or NULL. */
static Elf *open_elf(const char *path, int *fd)
{
    if (!libelf_ready()) {
        return NULL;
    }
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        return NULL;
    }
    Elf *e = elf_begin(*fd, ELF_C_READ_MMAP, NULL);
    if (e && elf_kind(e) == ELF_K_ELF) {
        return e;
    }
    if (e) {
        elf_end(e);
    }
    close(*fd);
    *fd = -1;
    return NULL;
}

/* Adds the .symtab of the separate debug file /usr/lib/debug/.build-id/xx/yyyy.debug, if any. */
static void add_debug_symbols(Elf *e, symtab *t)
{
    char *id = build_id(e);
    if (!id) {
        return;
    }
    char *path = g_strdup_printf("/usr/lib/debug/.build-id/%.2s/%s.debug", id, id + 2);
    int fd;
    Elf *debug = open_elf(path, &fd);
    if (debug) {
        add_symbols(debug, t, false);
        elf_end(debug);
        close(fd);
    }
    g_free(path);
    g_free(id);
}

static void free_file(elf_file *f)
{
    g_array_free(f->loads, TRUE);
    g_array_free(f->tab.syms, TRUE);
    g_string_chunk_free(f->tab.names);
    g_free(f);
}

static elf_file *read_elf(const char *path)
{
    int fd;
    Elf *e = open_elf(path, &fd);
    if (!e) {
        return NULL;
    }
    elf_file *f = g_new0(elf_file, 1);
    f->elf = true;
    f->loads = g_array_new(FALSE, FALSE, sizeof(segment));
    symtab_init(&f->tab);
    GElf_Ehdr eh;
    if (gelf_getehdr(e, &eh)) {
        f->type = eh.e_type;
    }
    size_t nph = 0;
    if (elf_getphdrnum(e, &nph) == 0) {
        for (size_t i = 0; i < nph; i++) {
            GElf_Phdr ph;
            if (gelf_getphdr(e, (int)i, &ph) && ph.p_type == PT_LOAD) {
                segment s = {ph.p_offset, ph.p_vaddr, ph.p_filesz, (ph.p_flags & PF_X) != 0};
                g_array_append_val(f->loads, s);
            }
        }
    }
    GArray *sections = read_sections(e);
    f->lo = UINT64_MAX;
    for (guint i = 0; i < sections->len; i++) {
        section *s = &g_array_index(sections, section, i);
        if (s->alloc && s->addr != 0 && s->size > 0) {
            f->lo = MIN(f->lo, s->addr);
            f->hi = MAX(f->hi, s->addr + s->size);
        }
    }
    if (f->lo > f->hi) {
        f->lo = f->hi = 0;
    }
    g_array_free(sections, TRUE);
    if (!add_symbols(e, &f->tab, true)) {
        add_debug_symbols(e, &f->tab);
    }
    symtab_finish(&f->tab);
    elf_end(e);
    close(fd);
    return f;
}

/* The file at path (inode: as the maps say, 0 for loaded tables), parsed at its first use. */
static elf_file *file_of(const char *path, unsigned long inode)
{
    if (!files) {
        files = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    }
    char *key = g_strdup_printf("%s\n%lu", path, inode);
    gpointer found;
    if (g_hash_table_lookup_extended(files, key, NULL, &found)) {
        g_free(key);
        return found;
    }
    /* a file the kernel calls "(deleted)" cannot be opened by that name: no symbols */
    elf_file *f = g_str_has_suffix(path, " (deleted)") ? NULL : read_elf(path);
    g_hash_table_insert(files, key, f);
    return f;
}

/* guest address - file address for a load whose mapping at guest address `first` holds file
 * offset `offset`: from the PT_LOAD holding that offset (p_vaddr - p_offset is the same modulo
 * the page size across a load, so any mapping of the load gives the same bias). */
static uint64_t load_bias(const elf_file *f, uint64_t first, uint64_t offset, uint64_t base)
{
    if (!f || f->loads->len == 0) {
        return base;
    }
    const segment *pick = &g_array_index(f->loads, segment, 0);
    for (guint i = 0; i < f->loads->len; i++) {
        const segment *s = &g_array_index(f->loads, segment, i);
        if (s->offset - s->offset % PAGE <= offset && offset < s->offset + MAX(s->filesz, 1)) {
            pick = s;
            break;
        }
    }
    return first - offset + pick->offset - pick->vaddr;
}

/* ---- the guest's mappings (user mode) ---- */

typedef struct {
    uint64_t start, stop, offset;
    unsigned long inode;
    char *path;
} map_line;

typedef struct {
    uint64_t lo, hi;
} range;

/* QEMU's own executable and libraries (and this plugin) appear in /proc/self/maps too: in a guest
 * whose guest_base is 0 they are at addresses the guest could name, so their ranges are left
 * out. */
static int host_object(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    GArray *ranges = data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD) {
            uint64_t lo = info->dlpi_addr + ph->p_vaddr;
            range r = {lo - lo % PAGE, lo + ph->p_memsz};
            g_array_append_val(ranges, r);
        }
    }
    return 0;
}

static void free_line(gpointer p)
{
    g_free(((map_line *)p)->path);
}

/* The file-backed lines of QEMU's /proc/self/maps that are not QEMU's own objects. */
static GArray *read_maps(void)
{
    GArray *lines = g_array_new(FALSE, FALSE, sizeof(map_line));
    g_array_set_clear_func(lines, free_line);
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f) {
        return lines;
    }
    GArray *host = g_array_new(FALSE, FALSE, sizeof(range));
    dl_iterate_phdr(host_object, host);
    char *text = NULL;
    size_t cap = 0;
    while (getline(&text, &cap, f) > 0) {
        map_line l = {0};
        int at = 0;
        if (sscanf(text, "%" SCNx64 "-%" SCNx64 " %*s %" SCNx64 " %*x:%*x %lu %n", &l.start,
                   &l.stop, &l.offset, &l.inode, &at) < 4 || at == 0) {
            continue;
        }
        char *path = g_strchomp(text + at);
        if (path[0] != '/') {
            continue; /* anonymous, [heap], [stack], [vdso]...: no file to read */
        }
        bool own = false;
        for (guint i = 0; i < host->len && !own; i++) {
            range *r = &g_array_index(host, range, i);
            own = l.start < r->hi && r->lo < l.stop;
        }
        if (!own) {
            l.path = g_strdup(path);
            g_array_append_val(lines, l);
        }
    }
    free(text);
    fclose(f);
    g_array_free(host, TRUE);
    return lines;
}

/* guest_base, from the main program: its file's first mapping gives the host address of its
 * load, QEMU's start_code (the first executable PT_LOAD's address, relocated) the guest's. */
static void find_guest_base(GArray *lines)
{
    if (base_known || !qlua_host.path_to_binary || !qlua_host.start_code) {
        return;
    }
    const char *given = qlua_host.path_to_binary();
    if (!given) {
        return;
    }
    char *real = realpath(given, NULL);
    struct stat st;
    bool have_stat = stat(given, &st) == 0;
    const map_line *l = NULL;
    for (guint i = 0; i < lines->len && !l; i++) {
        const map_line *c = &g_array_index(lines, map_line, i);
        if ((real && strcmp(c->path, real) == 0) || (have_stat && c->inode == st.st_ino)) {
            l = c;
        }
    }
    free(real);
    if (!l) {
        return;
    }
    elf_file *f = file_of(l->path, l->inode);
    if (!f || f->loads->len == 0) {
        return;
    }
    const segment *x = NULL;
    for (guint i = 0; i < f->loads->len && !x; i++) {
        if (g_array_index(f->loads, segment, i).exec) {
            x = &g_array_index(f->loads, segment, i);
        }
    }
    if (!x) {
        return;
    }
    uint64_t host_bias = load_bias(f, l->start, l->offset, l->start);
    uint64_t guest_bias = qlua_host.start_code() - x->vaddr;
    uint64_t candidate = host_bias - guest_bias;
    if (candidate % PAGE == 0) {
        guest_base = candidate;
        base_known = true;
    }
}

static void free_module(gpointer p)
{
    g_free(((module *)p)->path);
}

/* Reads the guest's mappings again: one module per load of a file. A load is a run of mappings
 * of one file (other lines of no file may lie between them) up to a mapping of another file or
 * another mapping of file offset 0. */
static void refresh_modules(void)
{
    GArray *lines = read_maps();
    find_guest_base(lines);
    if (!modules) {
        modules = g_array_new(FALSE, FALSE, sizeof(module));
        g_array_set_clear_func(modules, free_module);
    }
    g_array_set_size(modules, 0);
    last_hit = 0;
    module *cur = NULL;
    for (guint i = 0; i < lines->len; i++) {
        const map_line *l = &g_array_index(lines, map_line, i);
        if (l->start < guest_base) {
            continue;
        }
        uint64_t start = l->start - guest_base, stop = l->stop - guest_base;
        if (cur && l->offset != 0 && l->inode == cur->inode && strcmp(l->path, cur->path) == 0
            && start >= cur->stop) {
            cur->stop = stop;
            continue;
        }
        module m = {.path = g_strdup(l->path), .base = start - MIN(start, l->offset), .stop = stop,
                    .first = start, .first_offset = l->offset, .inode = l->inode};
        g_array_append_val(modules, m);
        cur = &g_array_index(modules, module, modules->len - 1);
    }
    g_array_free(lines, TRUE);
}

static module *module_at(uint64_t v)
{
    if (!modules) {
        return NULL;
    }
    if (last_hit < modules->len) {
        module *m = &g_array_index(modules, module, last_hit);
        if (m->base <= v && v < m->stop) {
            return m;
        }
    }
    for (guint i = 0; i < modules->len; i++) {
        module *m = &g_array_index(modules, module, i);
        if (m->base <= v && v < m->stop) {
            last_hit = i;
            return m;
        }
    }
    return NULL;
}

/* ---- System.map ---- */

static bool is_text_type(char c)
{
    return c == 'T' || c == 't' || c == 'W' || c == 'w';
}

/* "ADDR TYPE NAME [module]" lines; returns a file whose extent spans every listed address. */
static elf_file *read_system_map(FILE *in)
{
    elf_file *f = g_new0(elf_file, 1);
    f->loads = g_array_new(FALSE, FALSE, sizeof(segment));
    symtab_init(&f->tab);
    f->lo = UINT64_MAX;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) > 0) {
        char *p = line, *end;
        if (!g_ascii_isxdigit(*p)) {
            continue;
        }
        uint64_t addr = g_ascii_strtoull(p, &end, 16);
        if (end == p || (*end != ' ' && *end != '\t')) {
            continue;
        }
        p = end;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        char type = *p;
        if (!type || (p[1] != ' ' && p[1] != '\t')) {
            continue;
        }
        p += 2;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        size_t len = strcspn(p, " \t\r\n");
        if (len == 0) {
            continue;
        }
        f->lo = MIN(f->lo, addr);
        f->hi = MAX(f->hi, addr == UINT64_MAX ? addr : addr + 1);
        if (is_text_type(type)) {
            p[len] = '\0';
            sym_t s = {.value = addr, .end = UNSIZED, .rank = g_ascii_isupper(type) ? 2 : 1,
                       .name = g_string_chunk_insert_const(f->tab.names, p)};
            g_array_append_val(f->tab.syms, s);
        }
    }
    free(line);
    if (f->lo > f->hi) {
        f->lo = f->hi = 0;
    }
    symtab_finish(&f->tab);
    return f;
}

/* ---- the core functions ---- */

static void push_result(lua_State *L, const char *module_name, const sym_t *s, uint64_t offset)
{
    lua_pushstring(L, module_name);
    if (s) {
        lua_pushstring(L, s->name);
    } else {
        lua_pushnil(L);
    }
    qlua_push_u64(L, offset);
}

/* core.symbolize(vaddr) -> module, symbol|nil, offset; or nil when nothing known is there. */
static int symbols_symbolize(lua_State *L)
{
    uint64_t v = qlua_check_u64(L, 1);
    for (guint i = 0; tables && i < tables->len; i++) {
        table *t = g_ptr_array_index(tables, i);
        if (t->file->lo <= v && v < t->file->hi) {
            const sym_t *s = symtab_find(&t->file->tab, v);
            push_result(L, t->name, s, v - (s ? s->value : t->file->lo));
            return 3;
        }
    }
    /* while the script loads, QEMU has mapped no guest yet (and 7.2 crashes if asked about the
     * binary then) */
    if (qlua_host.system || qlua.loading) {
        lua_pushnil(L);
        return 1;
    }
    module *m = module_at(v);
    if (!m) {
        refresh_modules();
        m = module_at(v);
    }
    if (!m) {
        lua_pushnil(L);
        return 1;
    }
    if (!m->file) {
        m->file = file_of(m->path, m->inode);
        m->bias = load_bias(m->file, m->first, m->first_offset, m->base);
    }
    const sym_t *s = m->file ? symtab_find(&m->file->tab, v - m->bias) : NULL;
    push_result(L, m->path, s, s ? v - m->bias - s->value : v - m->base);
    return 3;
}

/* core.symbolize_load(path, name) -> the number of function symbols; or nil, why. */
static int symbols_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *name = luaL_checkstring(L, 2);
    if (!tables) {
        tables = g_ptr_array_new();
    }
    for (guint i = 0; i < tables->len; i++) {
        table *t = g_ptr_array_index(tables, i);
        if (strcmp(t->path, path) == 0 && strcmp(t->name, name) == 0) {
            lua_pushinteger(L, (lua_Integer)t->file->tab.syms->len);
            return 1;
        }
    }
    FILE *in = fopen(path, "re");
    if (!in) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read %s: %s", path, g_strerror(errno));
        return 2;
    }
    struct stat st;
    if (fstat(fileno(in), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(in);
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read %s: not a regular file", path);
        return 2;
    }
    char magic[4] = {0};
    size_t got = fread(magic, 1, sizeof magic, in);
    elf_file *f;
    if (got == 4 && memcmp(magic, ELFMAG, SELFMAG) == 0) {
        fclose(in);
        f = read_elf(path);
        if (!f) {
            lua_pushnil(L);
            lua_pushfstring(L, "%s: not an ELF file libelf can read (%s)", path, elf_errmsg(-1));
            return 2;
        }
        if (f->lo == f->hi && f->tab.syms->len > 0) { /* no section headers: span the symbols */
            sym_t *first = &g_array_index(f->tab.syms, sym_t, 0);
            sym_t *last = &g_array_index(f->tab.syms, sym_t, f->tab.syms->len - 1);
            f->lo = first->value;
            f->hi = last->end == UNSIZED ? last->value + 1 : last->end;
        }
    } else {
        rewind(in);
        f = read_system_map(in);
        fclose(in);
    }
    if (f->tab.syms->len == 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "no function symbols in %s (expected an ELF file with a symbol table, "
                           "or a System.map: lines \"ADDRESS TYPE NAME\")", path);
        free_file(f);
        return 2;
    }
    table *t = g_new0(table, 1);
    t->path = g_strdup(path);
    t->name = g_strdup(name);
    t->file = f;
    g_ptr_array_add(tables, t);
    lua_pushinteger(L, (lua_Integer)f->tab.syms->len);
    return 1;
}

void qlua_symbols_open(lua_State *L)
{
    static const luaL_Reg fns[] = {{"symbolize", symbols_symbolize},
                                   {"symbolize_load", symbols_load},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
}

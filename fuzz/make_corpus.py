#!/usr/bin/env python3
"""Write the seed corpus of every harness into fuzz/corpus/<harness>/.

Deterministic: the same files every run. Each seed is a small program in
the byte language of fuzz/driver.h (a harness's set-up bytes, then opcode +
argument bytes), written to start the fuzzer from every mode and every
operation rather than from nothing. Run from the repository root:

    python3 fuzz/make_corpus.py
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# ---- the driver's encodings (see fz_size, fz_align, fz_new_len) ----------


def size_zero():
    return [0]


def size_small(n):  # 1..256
    return [2, n - 1]


def size_mid(n):  # 1..9000
    return [14] + list(struct.pack("<H", n - 1))


def size_edge(i):  # index into fz_edges
    return [20, i]


def size_big(n):  # 1..256 KiB
    return [25] + list(struct.pack("<I", n - 1))


def size_hostile(k, v=0):
    return [30, k, v]


def align(log2):
    if log2 < 5:
        return [0, log2]
    if log2 < 13:
        return [18, log2]
    if log2 < 17:
        return [25, log2]
    return [29, log2 - 17]


def align_bad(i):
    return [30, i]


def nl_zero():
    return [0]


def nl_same():
    return [1]


def nl_shrink(by):
    return [2] + list(struct.pack("<H", by))


def nl_grow(by):  # 1..256
    return [6, by - 1]


def nl_grow_much(by):  # 1..65536
    return [9] + list(struct.pack("<H", by - 1))


def nl_double():
    return [11]


def nl_edge(i):
    return [12, i]


def nl_hostile(k, v=0):
    return [15, k, v]


def alloc(size, al):
    return [0] + size + al


def alloc_array(elem_index, count, al):
    return [5, elem_index, 4] + list(struct.pack("<H", count)) + al


def alloc_array_overflow(elem_index, al):
    return [5, elem_index, 0, 0] + al


def free(i):
    return [6, i]


def resize(i, nl):
    return [8, i] + nl


def remap(i, nl):
    return [10, i] + nl


def realloc(i, nl):
    return [11, i] + nl


def reset(how=0):
    return [13, how]


def check():
    return [14]


def extra(*args):
    return [15] + list(args)


# ---- programs ---------------------------------------------------------------


def basic():
    return (alloc(size_small(24), align(3)) + alloc(size_small(200), align(4))
            + alloc(size_mid(5000), align(6)) + alloc(size_big(20000), align(3))
            + alloc(size_zero(), align(4)) + check()
            + resize(0, nl_shrink(7)) + resize(1, nl_grow(40))
            + remap(2, nl_grow_much(3000)) + realloc(3, nl_double())
            + realloc(1, nl_shrink(150)) + free(2) + check()
            + alloc(size_small(8), align(0)) + free(0) + check())


def edges():
    prog = []
    for i in range(0, 32, 3):
        prog += alloc(size_edge(i), align(i % 13))
    for i in range(0, 10):
        prog += realloc(i, nl_edge((i * 7) % 32))
    prog += check()
    for i in range(0, 10):
        prog += resize(i, nl_grow(1))
    return prog + check()


def hostile():
    prog = alloc(size_small(100), align(3)) + alloc(size_small(64), align(12))
    for k in range(10):
        prog += alloc(size_hostile(k, 3), align(k % 17))
    for i in range(6):
        prog += alloc(size_small(16), align_bad(i))
    prog += alloc_array_overflow(3, align(3)) + alloc_array(2, 100, align(2))
    for k in range(10):
        prog += realloc(k % 2, nl_hostile(k, 5))
        prog += remap(k % 2, nl_hostile(k, 7))
        prog += resize(k % 2, nl_hostile(k, 9))
    return prog + check()


def churn():
    prog = []
    for r in range(4):
        for i in range(8):
            prog += alloc(size_small(16 * (i + 1)), align(i % 5))
        prog += realloc(3, nl_grow_much(9000)) + remap(5, nl_zero())
        for i in range(8):
            prog += free(0)
        prog += check()
    return prog


def stack_like():
    # Last-in first-out: what a bump allocator gives back.
    prog = []
    for i in range(6):
        prog += alloc(size_small(32 + i), align(i % 4))
        prog += resize(i, nl_grow(8))
    for i in range(5, -1, -1):
        prog += free(i)
    return prog + alloc(size_big(60000), align(12)) + resize(0, nl_shrink(100)) + check()


def with_resets():
    return (basic() + reset(0) + churn() + reset(1)
            + stack_like() + reset(2) + alloc(size_small(10), align(2)))


def misuse():
    prog = (alloc(size_small(24), align(3)) + alloc(size_mid(6000), align(4))
            + alloc(size_big(20000), align(3)) + alloc(size_small(100), align(5)))
    prog += extra(0, 0)              # double free
    prog += extra(1, 0, 5)           # wrong length
    prog += extra(2, 0, 1)           # wrong alignment
    prog += extra(3, 7, 9)           # foreign pointer
    prog += alloc(size_small(200), align(3))
    prog += extra(4, 0, 17, 0)       # interior pointer
    prog += extra(5, 1, 40)          # block of another instance (small)
    prog += extra(5, 0, 0x30, 0x75)  # ... (large)
    prog += extra(6, 0, 3)           # sentinel with a length (alignment 1)
    prog += extra(6, 4, 3)
    prog += extra(7, 0x10, 0x27)     # raw block
    prog += extra(8, 0, 0) + extra(8, 1, 1) + extra(8, 0, 2)  # refused frees
    return prog + check()


# ---- per harness -------------------------------------------------------------

PROGRAMS = {"basic": basic, "edges": edges, "hostile": hostile,
            "churn": churn, "stack": stack_like}


def gpa():
    seeds = {}
    modes = {"large": [0x00], "track": [0x02], "safe": [0x20], "raw": [0x04],
             "failing": [0x08, 5], "global": [0x0C], "global-deinit": [0x1C]}
    for mname, head in modes.items():
        for pname in ("basic", "edges", "hostile", "churn"):
            seeds["%s-%s" % (mname, pname)] = head + PROGRAMS[pname]()
    seeds["misuse"] = [0x01] + misuse()
    seeds["misuse-track"] = [0x03] + misuse()
    seeds["misuse-safe"] = [0x21] + misuse()
    seeds["safe-churn"] = [0x20] + churn()
    return seeds


def arena():
    seeds = {}
    heads = {"large": [0], "raw": [1], "fixed": [2, 8] + list(struct.pack("<I", 300000)),
             "gpa": [3], "gpa-track": [0x80], "failing": [4, 3], "failing-never": [4, 255]}
    for mname, head in heads.items():
        seeds[mname] = head + with_resets()
    seeds["large-hostile"] = [0] + hostile()
    return seeds


def fixed_buffer():
    def head(mode, offset, length):
        h = [mode] + list(struct.pack("<H", offset))
        if mode % 8 == 1:
            return h + [length]
        if mode % 8 in (2, 3):
            return h + list(struct.pack("<H", length))
        if mode % 8 == 0:
            return h
        return h + list(struct.pack("<I", length))
    return {
        "small": head(2, 3, 4000) + stack_like(),
        "large": head(4, 0, 1 << 20) + with_resets(),
        "odd": head(1, 7, 200) + basic(),
        "empty": head(0, 0, 0) + basic(),
        "null": head(0xF4, 0, 5000) + basic(),
        "hostile": head(4, 64, 100000) + hostile(),
    }


def large():
    seeds = {}
    for mode, mname in ((0, "raw"), (1, "large"), (2, "thread")):
        for pname in ("basic", "edges", "hostile"):
            seeds["%s-%s" % (mname, pname)] = [mode] + PROGRAMS[pname]()
    seeds["large-aligned"] = [1] + alloc(size_big(100000), align(16)) + \
        realloc(0, nl_grow_much(60000)) + alloc(size_small(5), align(20)) + \
        remap(1, nl_grow_much(5000)) + check()
    return seeds


def failing():
    seeds = {}
    for parent, pname in ((0, "raw"), (1, "large"), (2, "gpa")):
        for index in (0, 3, 9, 255):
            seeds["%s-%d" % (pname, index)] = [parent, index] + basic() + churn()
    seeds["gpa-hostile"] = [2, 255] + hostile()
    return seeds


def malloc_style():
    # fuzz_malloc.c: parent, failing index, then opcodes (op % 8): 0-2
    # malloc(size), 3 calloc(count byte, count, size), 4-5 mrealloc(block,
    # new size), 6 mfree(block), 7 check.
    def m(sz):
        return [0] + sz

    def c(count, sz):
        return [3, 1, count - 1] + sz

    def re(i, nl):
        return [4, i] + nl

    def fr(i):
        return [6, i]

    prog = (m(size_small(20)) + m(size_mid(5000)) + m(size_big(100000)) +
            c(10, size_small(30)) + m(size_zero()) + [7] +
            re(0, nl_grow_much(9000)) + re(1, [2, 0, 1]) +
            re(2, nl_grow_much(60000)) + fr(3) + [7] +
            m(size_edge(27)) + m(size_edge(28)) + re(4, [6, 200]) +
            fr(0) + fr(0) + [7])
    hostile_prog = (m(size_small(8)) + m(size_hostile(0)) +
                    m(size_hostile(3, 5)) + [3, 0, 0, 200] + size_small(9) +
                    re(0, [15, 1, 0]) + [7])
    seeds = {}
    for parent, pname in enumerate(("raw", "large", "gpa", "gpa-safe",
                                    "gpa-raw", "arena", "fail-raw",
                                    "fail-gpa", "flip")):
        for index in ((3, 9) if pname.startswith("fail") else (255,)):
            seeds["%s-%d" % (pname, index)] = [parent, index] + prog
        seeds[pname + "-hostile"] = [parent, 255] + hostile_prog
    return seeds


def main():
    total = 0
    for name, make in (("gpa", gpa), ("arena", arena),
                       ("fixed_buffer", fixed_buffer), ("large", large),
                       ("failing", failing), ("malloc", malloc_style)):
        out = os.path.join(ROOT, name)
        os.makedirs(out, exist_ok=True)
        for old in os.listdir(out):
            os.remove(os.path.join(out, old))
        for seed, data in sorted(make().items()):
            blob = bytes(b & 0xFF for b in data)
            with open(os.path.join(out, seed), "wb") as f:
                f.write(blob)
            total += len(blob)
    print("seed corpus: %d bytes in %s" % (total, ROOT))


if __name__ == "__main__":
    main()

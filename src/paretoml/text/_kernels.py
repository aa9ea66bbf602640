"""Numba kernels of Fast WordPiece: trie construction (failure links and pops) and encoding.

Everything a kernel needs about a tokenizer lives in one flat int32 array, the *model blob*
(sections listed in ``SECTIONS``; the header holds each section's start), so a call passes a
handful of arguments and numba's dispatch stays cheap. Characters are *char ids*: the rank of
the code point in the vocabulary's alphabet plus one, 0 meaning "in no token" (a word holding
one can only become [UNK]).

Trie layout (Song et al. 2021, "Fast WordPiece Tokenization", arXiv 2012.15524):
node 0 is the root (tokens spelled from the start of a word), node 1 the suffix root r# (a
token "##abc" is the path a-b-c below it). Built with an edge hash, then laid out as a double
array (one cache line per step, ~8 bytes per node). ``fail[v]`` is the failure link f(v)
(-1 = null) and ``pops`` the failure pops F(v) as (start, length) into a pool of
(token id, token length in characters).
"""

from __future__ import annotations

import numba as nb
import numpy as np

ROOT, SHARP = 0, 1
WORD, ISOLATED, SPACE, DELETE, EXPAND = 0, 1, 2, 3, 4  # same codes as normalize.py
LINMAXMATCH, MAXMATCH = 0, 1

SECTIONS = ("table", "exp_start", "exp_len", "exp_items", "da", "single_id", "node", "pool", "node_tok")
N_SECTIONS = len(SECTIONS)
HEADER = N_SECTIONS + 1  # section starts, then the end of the last section


@nb.njit(cache=True, nogil=True, inline="always")
def _hash_slot(node, cid, bits):
    key = np.uint64(node) * np.uint64(0x100000) + np.uint64(cid)
    return np.int64((key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))


@nb.njit(cache=True, nogil=True, inline="always")
def _find(h, bits, node, cid):
    """Child of `node` by char `cid` in the edge hash h = [node, cid, child] * 2**bits, or -1."""
    mask = (1 << bits) - 1
    s = _hash_slot(node, cid, bits)
    while True:
        n = h[3 * s]
        if n == node and h[3 * s + 1] == cid:
            return h[3 * s + 2]
        if n < 0:
            return -1
        s = (s + 1) & mask


@nb.njit(cache=True, nogil=True)
def _pack_edges(e_parent, e_cid, n_nodes):
    """The edges (parent, char) -> child, v = 2..n_nodes-1, in a hash at most half full."""
    bits = 4
    while (1 << bits) < 2 * n_nodes:
        bits += 1
    mask = (1 << bits) - 1
    h = np.full(3 << bits, -1, np.int32)
    for v in range(2, n_nodes):
        s = _hash_slot(e_parent[v], e_cid[v], bits)
        while h[3 * s] >= 0:
            s = (s + 1) & mask
        h[3 * s], h[3 * s + 1], h[3 * s + 2] = e_parent[v], e_cid[v], v
    return h, bits


@nb.njit(cache=True, nogil=True)
def build_trie(tok_cids, tok_off, tok_id, tok_suffix, nchars, literal_suffix):
    """Trie, failure links and failure pops for the tokens (char ids ``tok_cids[tok_off[i]:tok_off[i+1]]``).

    ``tok_suffix[i]`` marks "##..." tokens: they go, without the "##", under the suffix root, and
    with ``literal_suffix`` also literally under the root (only a word that starts with "##" can
    reach those; end-to-end words never hold "#", which is punctuation). Returns the arrays of the
    blob's trie sections.
    """
    n_tok = tok_id.shape[0]
    max_nodes = 2 + tok_cids.shape[0] * 2
    bits = 4
    while (1 << bits) < 2 * max_nodes:
        bits += 1
    size = 1 << bits
    mask = size - 1
    h_node = np.full(size, -1, np.int32)
    h_cid = np.zeros(size, np.int32)
    h_child = np.full(size, -1, np.int32)
    node_tok = np.full(max_nodes, -1, np.int32)
    depth = np.zeros(max_nodes, np.int32)
    e_parent = np.empty(max_nodes, np.int32)  # edge creating node v: parent and char
    e_cid = np.empty(max_nodes, np.int32)
    n_nodes = 2
    for t in range(n_tok):
        for suffix in range(2):
            if (suffix == 1 and not tok_suffix[t]) or (suffix == 0 and tok_suffix[t] and not literal_suffix):
                continue
            u = SHARP if suffix else ROOT
            for j in range(tok_off[t] + 2 * suffix, tok_off[t + 1]):
                c = tok_cids[j]
                s = _hash_slot(u, c, bits)
                while h_node[s] >= 0 and not (h_node[s] == u and h_cid[s] == c):
                    s = (s + 1) & mask
                if h_node[s] < 0:
                    h_node[s], h_cid[s], h_child[s] = u, c, n_nodes
                    e_parent[n_nodes], e_cid[n_nodes] = u, c
                    depth[n_nodes] = depth[u] + 1
                    n_nodes += 1
                u = h_child[s]
            node_tok[u] = tok_id[t]
    node_tok[SHARP] = -1  # r# is where suffixes start; a literal "##" token is a separate node
    h, bits = _pack_edges(e_parent, e_cid, n_nodes)
    # children lists (CSR by parent) for the breadth-first pass
    cnt = np.zeros(n_nodes + 1, np.int64)
    for v in range(2, n_nodes):
        cnt[e_parent[v] + 1] += 1
    for u in range(n_nodes):
        cnt[u + 1] += cnt[u]
    kids = np.empty(max(n_nodes - 2, 1), np.int32)
    fill = cnt[:-1].copy()
    for v in range(2, n_nodes):
        kids[fill[e_parent[v]]] = v
        fill[e_parent[v]] += 1
    fail = np.full(n_nodes, -1, np.int32)
    pop_start = np.zeros(n_nodes, np.int32)
    pop_len = np.zeros(n_nodes, np.int32)
    pool_id = np.empty(1024, np.int32)
    pool_len = np.empty(1024, np.int32)
    n_pool = 0
    queue = np.empty(n_nodes, np.int32)
    queue[0], queue[1] = ROOT, SHARP
    head, tail = 0, 2
    while head < tail:
        u = queue[head]
        head += 1
        for k in range(cnt[u], cnt[u + 1]):
            v = kids[k]
            queue[tail] = v
            tail += 1
            c = e_cid[v]
            # worst case this node appends F(u) plus the pops along u's failure chain
            need = n_pool + pop_len[u] + depth[u] + 2
            if need > pool_id.shape[0]:
                grow = max(need, 2 * pool_id.shape[0])
                pool_id = _grow(pool_id, grow)
                pool_len = _grow(pool_len, grow)
            if node_tok[v] >= 0:
                fail[v] = SHARP
                pop_start[v], pop_len[v] = n_pool, 1
                pool_id[n_pool], pool_len[n_pool] = node_tok[v], depth[v]
                n_pool += 1
                continue
            start = n_pool
            for q in range(pop_start[u], pop_start[u] + pop_len[u]):
                pool_id[n_pool], pool_len[n_pool] = pool_id[q], pool_len[q]
                n_pool += 1
            z = fail[u]
            while z >= 0 and _find(h, bits, z, c) < 0:
                for q in range(pop_start[z], pop_start[z] + pop_len[z]):
                    pool_id[n_pool], pool_len[n_pool] = pool_id[q], pool_len[q]
                    n_pool += 1
                z = fail[z]
            if z >= 0:
                fail[v] = _find(h, bits, z, c)
                pop_start[v], pop_len[v] = start, n_pool - start
            else:
                n_pool = start  # f(v) is null: any word reaching v cannot be tokenized
    return _double_array(cnt, kids, e_cid, n_nodes, nchars, fail, pop_start, pop_len, node_tok,
                         pool_id[:n_pool].copy(), pool_len[:n_pool].copy())


@nb.njit(cache=True, nogil=True)
def _double_array(cnt, kids, e_cid, n_nodes, nchars, fail, pop_start, pop_len, node_tok, pool_id, pool_len):
    """Re-lay the trie as a double array (Aoe 1989): node u's child by char c is the slot
    t = base[u] + c when check[t] == u. Stored interleaved as da[4t:4t+4] = base, check, token,
    token length (token = the id when str(t) is a token, else -1), so one step, and the common
    failure transition out of a token node, read one cache line; per-node arrays are re-indexed
    by slot."""
    cap = 2 * n_nodes + 2 * nchars + 16
    base = np.zeros(cap, np.int32)
    check = np.full(cap, -1, np.int32)
    slot = np.full(n_nodes, -1, np.int64)
    slot[ROOT], slot[SHARP] = ROOT, SHARP
    check[ROOT] = check[SHARP] = -2
    first_free, top = 2, 2
    queue = np.empty(n_nodes, np.int32)
    queue[0], queue[1] = ROOT, SHARP
    head, tail = 0, 2
    while head < tail:  # breadth first: a parent gets its slot before its children are placed
        u = queue[head]
        head += 1
        k0, k1 = cnt[u], cnt[u + 1]
        if k0 == k1:
            continue
        cmin = nchars + 1
        for k in range(k0, k1):
            queue[tail] = kids[k]
            tail += 1
            cmin = min(cmin, e_cid[kids[k]])
        p = first_free
        while True:
            if p + nchars + 2 >= cap:
                cap *= 2
                base = _grow(base, cap)
                check = _grow_fill(check, cap, -1)
            if check[p] == -1 and p - cmin >= 1:
                b = p - cmin
                ok = True
                for k in range(k0, k1):
                    if check[b + e_cid[kids[k]]] != -1:
                        ok = False
                        break
                if ok:
                    break
            p += 1
        base[slot[u]] = b
        for k in range(k0, k1):
            t = b + e_cid[kids[k]]
            check[t] = slot[u]
            slot[kids[k]] = t
            top = max(top, t + 1)
        while check[first_free] != -1:
            first_free += 1
    size = max(top, first_free) + nchars + 2  # base + c stays inside for every c
    fail_s = np.full(size, -1, np.int32)
    pop_start_s = np.zeros(size, np.int32)
    pop_len_s = np.zeros(size, np.int32)
    tok_s = np.full(size, -1, np.int32)
    for v in range(n_nodes):
        t = slot[v]
        fail_s[t] = slot[fail[v]] if fail[v] >= 0 else -1
        pop_start_s[t], pop_len_s[t], tok_s[t] = pop_start[v], pop_len[v], node_tok[v]
    da = np.empty(4 * size, np.int32)
    da[0::4], da[1::4], da[2::4] = base[:size], check[:size], tok_s
    da[3::4] = 0
    for v in range(n_nodes):
        if node_tok[v] >= 0:
            da[4 * slot[v] + 3] = pool_len[pop_start[v]]  # F(v) = [(token, its length)]
    single_id = np.full(nchars + 1, -1, np.int32)
    for c in range(1, nchars + 1):
        t = base[ROOT] + c
        if check[t] == ROOT:
            single_id[c] = tok_s[t]
    # what a failure transition reads, together: node = [fail, pop start, pop count] per slot,
    # pool = [token id, token length] per pop
    node = np.empty(3 * size, np.int32)
    node[0::3], node[1::3], node[2::3] = fail_s, pop_start_s, pop_len_s
    pool = np.empty(2 * pool_id.shape[0], np.int32)
    pool[0::2], pool[1::2] = pool_id, pool_len
    return da, single_id, node, pool, tok_s


@nb.njit(cache=True, nogil=True)
def _grow_fill(a, n, value):
    b = np.full(n, value, a.dtype)
    b[: a.shape[0]] = a
    return b


@nb.njit(cache=True, nogil=True)
def _grow(a, n):
    b = np.empty(n, a.dtype)
    b[: a.shape[0]] = a
    return b


@nb.njit(cache=True, nogil=True, inline="always")
def _sec(blob, i):
    return blob[blob[i]: blob[i + 1]]


@nb.njit(cache=True, nogil=True, inline="always")
def _goto(da, u, c):
    t = da[4 * u] + c
    return t if da[4 * t + 1] == u else -1


@nb.njit(cache=True, nogil=True)
def _match_word(blob, wc, ws, we, wlen, algo, out, n):
    """WordPiece of one word (char ids wc[:wlen], original spans ws/we) into out[n:]; returns
    the new n, or -1 when the word cannot be tokenized (the caller writes [UNK])."""
    da = _sec(blob, 4)
    if algo == MAXMATCH:  # classic longest-match-first: walk as far as possible, back off
        s = 0
        while s < wlen:
            u = ROOT if s == 0 else SHARP
            best, best_end = -1, -1
            for j in range(s, wlen):
                u = _goto(da, u, wc[j])
                if u < 0:
                    break
                if da[4 * u + 2] >= 0:
                    best, best_end = da[4 * u + 2], j + 1
            if best < 0:
                return -1
            out[n, 0], out[n, 1], out[n, 2] = best, ws[s], we[best_end - 1]
            n += 1
            s = best_end
        return n
    node, pool = _sec(blob, 6), _sec(blob, 7)
    u, p, v = ROOT, 0, -1  # p: first character not yet covered by an emitted token
    for j in range(wlen + 1):
        c = wc[j] if j < wlen else 0
        while True:
            if j < wlen:
                v = _goto(da, u, c)
                if v >= 0:
                    break
            elif u == SHARP:  # end of word and every character covered
                return n
            tok = da[4 * u + 2]
            if tok >= 0:  # F(u) = [str(u)], f(u) = r#: no need to look further
                L = da[4 * u + 3]
                out[n, 0], out[n, 1], out[n, 2] = tok, ws[p], we[p + L - 1]
                n += 1
                p += L
                u = SHARP
                continue
            f, q0 = node[3 * u], node[3 * u + 1]
            if f < 0:
                return -1
            for q in range(q0, q0 + node[3 * u + 2]):
                L = pool[2 * q + 1]
                out[n, 0], out[n, 1], out[n, 2] = pool[2 * q], ws[p], we[p + L - 1]
                n += 1
                p += L
            u = f
        u = v
    return n


@nb.njit(cache=True, nogil=True)
def _ensure(out, n, extra):
    if n + extra <= out.shape[0]:
        return out
    bigger = np.empty((max(2 * out.shape[0], n + extra), 3), np.int32)
    bigger[:n] = out[:n]
    return bigger


@nb.njit(cache=True, nogil=True)
def _encode_range(blob, cps, lo, hi, params, out, n, wc, ws, we):
    """End-to-end tokenization of cps[lo:hi] (one text) into out[n:] as rows (id, start, end);
    offsets are code-point indices into the text. Returns (out, n); out grows when full."""
    unk, max_chars, cls_id, sep_id, algo = params[0], params[1], params[2], params[3], params[4]
    table, exp_start, exp_len, exp_items = _sec(blob, 0), _sec(blob, 1), _sec(blob, 2), _sec(blob, 3)
    single_id = _sec(blob, 5)
    out = _ensure(out, n, 2)
    if cls_id >= 0:
        out[n, 0], out[n, 1], out[n, 2] = cls_id, 0, 0
        n += 1
    wlen = 0
    in_word = False
    dead = False  # the word already failed (char in no token, or longer than max_chars)
    word_s = word_e = 0
    ep = ee = 0  # pending items of an expanded code point
    i = lo
    cur_s = cur_e = 0
    while True:
        if ep < ee:
            e = exp_items[ep]
            ep += 1
        elif i < hi:
            e = table[cps[i]]
            cur_s = i - lo
            cur_e = cur_s + 1
            i += 1
            if (e & 7) == EXPAND:
                k = e >> 3
                ep, ee = exp_start[k], exp_start[k] + exp_len[k]
                continue
        else:
            e = SPACE  # end of text: flush the last word
        kind = e & 7
        if kind == WORD:
            if not in_word:
                in_word, dead, wlen, word_s = True, False, 0, cur_s
            word_e = cur_e
            if not dead:
                c = e >> 3
                if c == 0 or wlen >= max_chars:
                    dead = True
                else:
                    wc[wlen], ws[wlen], we[wlen] = c, cur_s, cur_e
                    wlen += 1
            continue
        if kind == DELETE:
            continue
        # SPACE or ISOLATED: the current word ends here
        if in_word:
            out = _ensure(out, n, wlen + 1)
            m = -1 if dead else _match_word(blob, wc, ws, we, wlen, algo, out, n)
            if m < 0:
                out[n, 0], out[n, 1], out[n, 2] = unk, word_s, word_e
                n += 1
            else:
                n = m
            in_word = False
        if kind == ISOLATED:
            tok = single_id[e >> 3]
            out = _ensure(out, n, 1)
            out[n, 0], out[n, 1], out[n, 2] = (tok if tok >= 0 and max_chars >= 1 else unk), cur_s, cur_e
            n += 1
        elif ep >= ee and i >= hi:
            break
    out = _ensure(out, n, 1)
    if sep_id >= 0:
        out[n, 0], out[n, 1], out[n, 2] = sep_id, 0, 0
        n += 1
    return out, n


@nb.njit(cache=True, nogil=True)
def encode_one(blob, cps, params):
    """One text → (rows (n, 3) of id, start, end)."""
    m = min(params[1], cps.shape[0]) + 1
    buf = np.empty(3 * m, np.int32)
    wc, ws, we = buf[:m], buf[m:2 * m], buf[2 * m:]
    out = np.empty((cps.shape[0] + 4, 3), np.int32)
    out, n = _encode_range(blob, cps, 0, cps.shape[0], params, out, 0, wc, ws, we)
    return out[:n]


@nb.njit(cache=True, nogil=True)
def encode_many(blob, cps, starts, params):
    """Texts cps[starts[t]:starts[t+1]] → (rows (n, 3), row_splits (T+1,))."""
    n_texts = starts.shape[0] - 1
    m = min(params[1], cps.shape[0]) + 1
    buf = np.empty(3 * m, np.int32)
    wc, ws, we = buf[:m], buf[m:2 * m], buf[2 * m:]
    out = np.empty((cps.shape[0] // 2 + 2 * n_texts + 16, 3), np.int32)
    splits = np.empty(n_texts + 1, np.int64)
    n = 0
    for t in range(n_texts):
        splits[t] = n
        out, n = _encode_range(blob, cps, starts[t], starts[t + 1], params, out, n, wc, ws, we)
    splits[n_texts] = n
    return out[:n], splits


@nb.njit(cache=True, nogil=True)
def tokenize_word(blob, alphabet, cps, params):
    """WordPiece of one already-normalised word (code points) → rows (id, start, end); a word that
    cannot be tokenized or is longer than max_chars is one [UNK]."""
    unk, max_chars, algo = params[0], params[1], params[4]
    n_chars = cps.shape[0]
    wc = np.zeros(n_chars, np.int32)  # char ids: rank in the alphabet + 1, 0 if absent
    pos = np.searchsorted(alphabet, cps)
    for j in range(n_chars):
        if pos[j] < alphabet.shape[0] and alphabet[pos[j]] == cps[j]:
            wc[j] = pos[j] + 1
    out = np.empty((n_chars + 1, 3), np.int32)
    if n_chars == 0:
        return out[:0]
    ws = np.arange(n_chars).astype(np.int32)
    we = ws + 1
    ok = n_chars <= max_chars
    for j in range(n_chars):
        ok = ok and wc[j] > 0
    n = _match_word(blob, wc, ws, we, n_chars, algo, out, 0) if ok else -1
    if n < 0:
        out[0, 0], out[0, 1], out[0, 2] = unk, 0, n_chars
        n = 1
    return out[:n]

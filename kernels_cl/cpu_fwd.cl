/* The `cpu` kernel family, part 3 of 3: forward kernels (statistics and y). After bn_common.h, cpu_base.cl.
 *   channel-first  bn_stats_partial_cf -> bn_stats_final -> bn_apply (staged; bn_apply alone for inference),
 *                  bn_fused_train_cf (fused), bn_fused_train_cft (fused, short rows as tiles of positions)
 *   channel-last   bn_stats_partial_cl -> bn_stats_final -> bn_apply_cl (staged), bn_fused_train_cl (fused)
 */

#include "bn_common.h"

/* Partial, channel-first: work-item (k, c) = (get_global_id(0), get_global_id(1)) covers elements
 * [k * chunk, min((k + 1) * chunk, m)) of channel c. part[(k * C + c) * 2 + {0, 1}] = S1, S2. */
__kernel ITEM_ATTR void bn_stats_partial_cf(__global const data_t *x, uint C, uint inner, uint m, uint chunk,
                                            __global acc_t *part)
{
    const uint k = get_global_id(0), c = get_global_id(1);
    acc_t s1 = 0, s2 = 0;
    cf_sums(x, x, 1, C, inner, c, k * chunk, min(k * chunk + chunk, m), channel_shift(x, C, inner, m, c), &s1,
            &s2 ZF_NONE);
    part[((size_t)k * C + c) * 2] = s1;
    part[((size_t)k * C + c) * 2 + 1] = s2;
}

/* Final, one work-item per channel: add the K partials and finish. */
__kernel APPLY_ATTR void bn_stats_final(__global const acc_t *part, __global const data_t *x, uint C, uint inner,
                                        uint K, uint m, STATS_ARGS)
{
    const uint c = get_global_id(0);
    if (c >= C)
        return;
    acc_t s1 = 0, s2 = 0;
    for (uint k = 0; k < K; ++k) {
        s1 += part[((size_t)k * C + c) * 2];
        s2 += part[((size_t)k * C + c) * 2 + 1];
    }
    finish_stats(x, C, inner, c, m, channel_shift(x, C, inner, m, c), s1, s2, STATS_PASS);
}

/* y over a contiguous run of one channel: act((x - mu) * a + b). */
inline void cf_apply_run(__global const data_t *x, __global data_t *y, size_t base, uint len, acc_t mu, acc_t a,
                         acc_t b, int nt, size_t ahead)
{
    __global const data_t *xs = x + base;
    __global data_t *ys = y + base;
    const uint n8 = len / 8;
    if (ahead) /* fused kernels: the run of x at `ahead` (the next group's; never at 0) read while this is written */
        for (uint k = 0; k < n8; ++k) {
            PREFETCH_AT(x + ahead + 8 * k);
            STORE8_NT(ACT8((LOAD8(xs, 8 * k) - mu) * a + b), ys, 8 * k, nt);
        }
    else
        for (uint k = 0; k < n8; ++k)
            STORE8_NT(ACT8((LOAD8(xs, 8 * k) - mu) * a + b), ys, 8 * k, nt);
    for (uint w = n8 * 8; w < len; ++w)
        STORE(ACT1((LOAD(xs, w) - mu) * a + b), ys, w);
}

__kernel ITEM_ATTR void bn_apply(__global const data_t *x, __global data_t *y, ulong n, uint inner, uint C,
                                 uint seg, __global const acc_t *mean_w, __global const acc_t *stat_w, int is_var,
                                 acc_t eps, __global const acc_t *gamma, __global const acc_t *beta, int fix_gamma,
                                 int nt)
{
    if (nt) {
        BLOCKS_BEGIN
        acc_t mu, a, b, mu2, a2, b2;
        apply_factors(cc, mean_w, stat_w, is_var, eps, gamma, beta, fix_gamma, &mu, &a, &b);
        apply_factors(cn, mean_w, stat_w, is_var, eps, gamma, beta, fix_gamma, &mu2, &a2, &b2);
        for (; f + 8 <= f1; f += 8) {
            if (left > 8) {
                STORE8_NT(ACT8((LOAD8(x, f) - mu) * a + b), y, f, 1);
                left -= 8;
                continue;
            }
            const lane8_t first = FIRST_LANES(left);
            STORE8_NT(ACT8((LOAD8(x, f) - MIX(mu2, mu, first)) * MIX(a2, a, first) + MIX(b2, b, first)), y, f, 1);
            left += inner - 8;
            cc = cn;
            cn = cc + 1 == C ? 0 : cc + 1;
            mu = mu2, a = a2, b = b2;
            apply_factors(cn, mean_w, stat_w, is_var, eps, gamma, beta, fix_gamma, &mu2, &a2, &b2);
        }
        for (; f < f1; ++f, --left) { /* the last segment's last n % 8 values */
            if (left == 0) {
                mu = mu2, a = a2, b = b2, left = inner;
            }
            STORE(ACT1((LOAD(x, f) - mu) * a + b), y, f);
        }
        return;
    }
    ROWS_BEGIN
    acc_t mu, a, b;
    apply_factors(cc, mean_w, stat_w, is_var, eps, gamma, beta, fix_gamma, &mu, &a, &b);
    cf_apply_run(x, y, f, len, mu, a, b, 0, 0);
    ROWS_END
}

/* A work-item of the fused channel-first training kernel takes `steps` groups one after the other; while it
 * writes row o, channel t of a group (the second pass walks backwards), it prefetches row o_, channel t_ of its
 * next group (forwards: the order that group's first pass reads). Not in backward: x and dy of a group fill the
 * cache already (32x64x56x56 float32: 802 KB a channel), and prefetching the next group's made it slower
 * (2.65 -> 2.87 ms PoCL, 2.42 -> 2.75 Intel). AHEAD: that run's offset, 0 for none (at the last
 * step, or for a channel past C; a next group is never at offset 0). */
#define AHEAD(o_, t_)                                                                       \
    (step + 1 < steps && c0 + G + (t_) < C ? ((size_t)(o_) * C + c0 + G + (t_)) * inner : (size_t)0)

__kernel ITEM_ATTR void bn_fused_train_cf(__global const data_t *x, __global data_t *y, uint C, uint inner, uint m,
                                          uint G, uint steps, __global const acc_t *gamma, __global const acc_t *beta,
                                          int fix_gamma, STATS_ARGS, int nt, __local acc8_t *tab8)
{
    __local acc_t *tab = (__local acc_t *)tab8;
    const uint outer = m / inner;
    for (uint step = 0; step < steps; ++step) {
        const uint c0 = (get_global_id(0) * steps + step) * G;
        if (c0 >= C)
            return;
        const uint g = min(G, C - c0);
        for (uint t = 0; t < g; ++t) {
            __local acc_t *e = tab + t * FUSED_TAB;
            for (uint k = 0; k < FUSED_TAB; ++k)
                e[k] = 0;
            e[E_SHIFT] = channel_shift(x, C, inner, m, c0 + t);
        }
        fused_sums(x, x, 1, C, inner, outer, c0, g, tab);
        for (uint t = 0; t < g; ++t) {
            __local acc_t *e = tab + t * FUSED_TAB;
            sums_t r;
            sums_load(e, &r);
            finish_stats(x, C, inner, c0 + t, m, e[E_SHIFT], sums_first(&r), sums_second(&r), STATS_PASS);
        }
        for (uint o = outer; o-- > 0;)
            for (uint t = g; t-- > 0;) {
                acc_t mu, a, b;
                apply_factors(c0 + t, mean_w, invstd_w, 0, eps, gamma, beta, fix_gamma, &mu, &a, &b);
                cf_apply_run(x, y, ((size_t)o * C + c0 + t) * inner, inner, mu, a, b, nt,
                             AHEAD(outer - 1 - o, g - 1 - t));
            }
    }
}

/* Shifts of the tile, channel by channel the same additions and division as channel_shift(x, C, 1, outer, c),
 * so every kernel gets bit-identical shifts. */
inline void tile_shift(__global const data_t *x, uint C, uint outer, uint c0, uint w, __local acc_t *ks)
{
    const uint cnt = min(outer, (uint)SHIFT_ROWS);
    for (uint t = 0; t < w; ++t)
        ks[t] = 0;
    for (uint r = 0; r < cnt; ++r) {
        const size_t at = (size_t)r * C + c0;
        uint t = 0;
        for (; t + 8 <= w; t += 8)
            SV8(LV8(ks + t) + LOAD8(x, at + t), ks + t);
        for (; t < w; ++t)
            ks[t] += LOAD(x, at + t);
    }
    for (uint t = 0; t < w; ++t)
        ks[t] = ks[t] / (acc_t)cnt;
}

/* s1 = sum (x - K), s2 = sum (x - K)^2 per channel of the tile over rows [r0, r1), in blocks of TILE_BLOCK rows
 * on fresh registers whose totals join s1 and s2 with compensation (kept in q1, q2, folded in at the end):
 * 32 channels at a time (a row's 32 values are a contiguous run; the block's rows stay in cache between the
 * slabs), then 8 at a time, then one at a time. pf (the statistics pass, data from memory): the first slab also
 * prefetches the next block's rows (32x64x56x56 float32 NHWC statistics, measured beside a pure read of the same
 * bytes in one process: 1.4-1.8 -> 1.1-1.4 times its time; for training see TILE_LAST_FIRST; the same in
 * backward's sums and in the fused tiles, whose data is in cache, gained nothing or lost). */
inline void tile_sums(__global const data_t *x, uint C, uint c0, uint w, uint r0, uint r1, __local const acc_t *ks,
                      __local acc_t *s1, __local acc_t *s2, __local acc_t *q1, __local acc_t *q2, int pf)
{
    for (uint t = 0; t < w; ++t)
        s1[t] = s2[t] = q1[t] = q2[t] = 0;
    for (uint b0 = r0; b0 < r1; b0 += TILE_BLOCK) {
        const uint b1 = min(b0 + TILE_BLOCK, r1);
        uint t0 = 0;
        for (; t0 + 32 <= w; t0 += 32) {
            const acc8_t k0 = LV8(ks + t0), k1 = LV8(ks + t0 + 8), k2 = LV8(ks + t0 + 16), k3 = LV8(ks + t0 + 24);
            acc8_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, p0 = 0, p1 = 0, p2 = 0, p3 = 0;
            for (uint r = b0; r < b1; ++r) {
                const size_t at = (size_t)r * C + c0 + t0;
                if (pf && t0 == 0 && r + TILE_BLOCK < r1)
                    for (uint j = 0; j < w; j += 64 / sizeof(data_t))
                        PREFETCH_AT(x + at + (size_t)TILE_BLOCK * C + j);
                const acc8_t d0 = LOAD8(x, at) - k0, d1 = LOAD8(x, at + 8) - k1;
                const acc8_t d2 = LOAD8(x, at + 16) - k2, d3 = LOAD8(x, at + 24) - k3;
                a0 += d0;
                p0 += d0 * d0;
                a1 += d1;
                p1 += d1 * d1;
                a2 += d2;
                p2 += d2 * d2;
                a3 += d3;
                p3 += d3 * d3;
            }
            ladd8(s1 + t0, q1 + t0, a0);
            ladd8(s1 + t0 + 8, q1 + t0 + 8, a1);
            ladd8(s1 + t0 + 16, q1 + t0 + 16, a2);
            ladd8(s1 + t0 + 24, q1 + t0 + 24, a3);
            ladd8(s2 + t0, q2 + t0, p0);
            ladd8(s2 + t0 + 8, q2 + t0 + 8, p1);
            ladd8(s2 + t0 + 16, q2 + t0 + 16, p2);
            ladd8(s2 + t0 + 24, q2 + t0 + 24, p3);
        }
        for (; t0 + 8 <= w; t0 += 8) {
            const acc8_t k0 = LV8(ks + t0);
            acc8_t a0 = 0, p0 = 0;
            for (uint r = b0; r < b1; ++r) {
                const acc8_t d = LOAD8(x, (size_t)r * C + c0 + t0) - k0;
                a0 += d;
                p0 += d * d;
            }
            ladd8(s1 + t0, q1 + t0, a0);
            ladd8(s2 + t0, q2 + t0, p0);
        }
        for (; t0 < w; ++t0) {
            acc_t a0 = 0, p0 = 0;
            for (uint r = b0; r < b1; ++r) {
                const acc_t d = LOAD(x, (size_t)r * C + c0 + t0) - ks[t0];
                a0 += d;
                p0 += d * d;
            }
            ladd(s1 + t0, q1 + t0, a0);
            ladd(s2 + t0, q2 + t0, p0);
        }
    }
    for (uint t = 0; t < w; ++t) {
        s1[t] = comp(s1[t], q1[t]);
        s2[t] = comp(s2[t], q2[t]);
    }
}

/* y = act((x - mu) a + b) over rows [r0, r1) of the tile, with the factors in tab (mu, a, b at 0, W, 2 W). */
inline void tile_apply(__global const data_t *x, __global data_t *y, uint C, uint c0, uint w, uint W, uint r0,
                       uint r1, int nt, __local const acc_t *tab)
{
    __local const acc_t *mu = tab, *a = tab + W, *b = tab + 2 * W;
    for (uint r = r0; r < r1; ++r) {
        const size_t at = (size_t)r * C + c0;
        uint t = 0;
        for (; t + 8 <= w; t += 8)
            STORE8_NT(ACT8((LOAD8(x, at + t) - LV8(mu + t)) * LV8(a + t) + LV8(b + t)), y, at + t, nt);
        for (; t < w; ++t)
            STORE(ACT1((LOAD(x, at + t) - mu[t]) * a[t] + b[t]), y, at + t);
    }
}

inline void tile_apply_factors(uint c0, uint w, uint W, __global const acc_t *mean_w, __global const acc_t *stat_w,
                               int is_var, acc_t eps, __global const acc_t *gamma, __global const acc_t *beta,
                               int fix_gamma, __local acc_t *tab)
{
    uint t = 0;
    for (; t + 8 <= w; t += 8) { /* 8 channels at once: the same operations as apply_factors, lane by lane */
        const size_t c = c0 + t;
        const acc8_t inv = is_var ? (acc_t)1 / sqrt(vload8(0, stat_w + c) + eps) : vload8(0, stat_w + c);
        SV8(vload8(0, mean_w + c), tab + t);
        SV8((fix_gamma ? (acc8_t)1 : vload8(0, gamma + c)) * inv, tab + W + t);
        SV8(vload8(0, beta + c), tab + 2 * W + t);
    }
    for (; t < w; ++t) {
        acc_t mu, a, b;
        apply_factors(c0 + t, mean_w, stat_w, is_var, eps, gamma, beta, fix_gamma, &mu, &a, &b);
        tab[t] = mu;
        tab[W + t] = a;
        tab[2 * W + t] = b;
    }
}

/* Partial statistics: part[(k * C + c) * 2 + {0, 1}] = S1, S2 of the tile's channels over its rows. */
__kernel ITEM_ATTR void bn_stats_partial_cl(__global const data_t *x, uint C, uint outer, uint W, uint chunk,
                                            __global acc_t *part, __local acc8_t *tab8)
{
    __local acc_t *tab = (__local acc_t *)tab8;
    TILE_BEGIN(outer, TILE_CHUNK)
    tile_shift(x, C, outer, c0, w, tab);
    tile_sums(x, C, c0, w, r0, r1, tab, tab + Wp, tab + 2 * Wp, tab + 3 * Wp, tab + 4 * Wp, 1);
    store_partials(part, C, c0, w, Wp, tab);
}

__kernel ITEM_ATTR void bn_apply_cl(__global const data_t *x, __global data_t *y, uint C, uint outer, uint W,
                                    uint chunk, __global const acc_t *mean_w, __global const acc_t *stat_w, int is_var,
                                    acc_t eps, __global const acc_t *gamma, __global const acc_t *beta, int fix_gamma,
                                    int nt, __local acc8_t *tab8)
{
    __local acc_t *tab = (__local acc_t *)tab8;
    TILE_BEGIN(outer, TILE_LAST_FIRST)
    tile_apply_factors(c0, w, Wp, mean_w, stat_w, is_var, eps, gamma, beta, fix_gamma, tab);
    tile_apply(x, y, C, c0, w, Wp, r0, r1, nt, tab);
}

/* Fused, channel-last: a tile over every row (chunk = outer). */
__kernel ITEM_ATTR void bn_fused_train_cl(__global const data_t *x, __global data_t *y, uint C, uint outer, uint W,
                                          uint chunk, __global const acc_t *gamma, __global const acc_t *beta,
                                          int fix_gamma, STATS_ARGS, int nt, __local acc8_t *tab8)
{
    __local acc_t *tab = (__local acc_t *)tab8;
    TILE_BEGIN(outer, TILE_CHUNK)
    tile_shift(x, C, outer, c0, w, tab);
    tile_sums(x, C, c0, w, r0, r1, tab, tab + Wp, tab + 2 * Wp, tab + 3 * Wp, tab + 4 * Wp, 0);
    for (uint t = 0; t < w; ++t)
        finish_stats(x, C, 1, c0 + t, outer, tab[t], tab[Wp + t], tab[2 * Wp + t], STATS_PASS);
    tile_apply_factors(c0, w, Wp, mean_w, invstd_w, 0, eps, gamma, beta, fix_gamma, tab);
    tile_apply(x, y, C, c0, w, Wp, r0, r1, nt, tab);
}

__kernel ITEM_ATTR void bn_fused_train_cft(__global const data_t *x, __global data_t *y, uint C, uint inner,
                                           uint outer, uint G, __global const acc_t *gamma,
                                           __global const acc_t *beta, int fix_gamma, STATS_ARGS, int nt,
                                           __local acc8_t *tab8)
{
    CFT_BEGIN
    const uint m = outer * inner;
    SPREAD(tab, g, inner, channel_shift(x, C, inner, m, c0 + t))
    tile_sums_rows(x, x, 1, row, p0, P, 0, outer, tab, tab + Pp, tab + 2 * Pp, tab + 3 * Pp, tab + 4 * Pp);
    for (uint t = 0; t < g; ++t)
        finish_stats(x, C, inner, c0 + t, m, tab[t * inner], channel_total(tab + Pp, t, inner),
                     channel_total(tab + 2 * Pp, t, inner), STATS_PASS);
    SPREAD(tab, g, inner, mean_w[c0 + t])
    SPREAD(tab + Pp, g, inner, (fix_gamma ? (acc_t)1 : gamma[c0 + t]) * invstd_w[c0 + t])
    SPREAD(tab + 2 * Pp, g, inner, beta[c0 + t])
    tile_apply(x, y, row, p0, P, Pp, 0, outer, nt, tab);
}

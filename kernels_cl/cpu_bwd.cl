/* The `cpu` kernel family, part 2 of 3: backward kernels (dbeta, dgamma, dx). After bn_common.h, cpu_base.cl.
 *   channel-first  bn_bwd_partial_cf -> bn_bwd_final -> bn_bwd_apply (staged), bn_fused_bwd_cf (fused),
 *                  bn_fused_bwd_cft (fused, short rows as tiles of positions)
 *   channel-last   bn_bwd_partial_cl -> bn_bwd_final -> bn_bwd_apply_cl (staged), bn_fused_bwd_cl (fused)
 * The fused kernels are not in an act program (ACT_*): its backward runs in stages, each recomputing z from x.
 */

#include "bn_common.h"

/* Backward stage 1, channel-first: part[(k * C + c) * 2 + {0, 1}] = sum dy, sum dy * (x - mean) over the
 * chunk k of channel c. mean_w: the batch mean (training) or the running mean (inference). */
__kernel ITEM_ATTR void bn_bwd_partial_cf(__global const data_t *x, __global const data_t *dy, uint C, uint inner,
                                          uint m, uint chunk, __global const acc_t *mean_w,
                                          __global acc_t *part ZF_KARGS)
{
    const uint k = get_global_id(0), c = get_global_id(1);
    ZF_OF(c)
    acc_t s_dy = 0, s_dyx = 0;
    cf_sums(dy, x, 0, C, inner, c, k * chunk, min(k * chunk + chunk, m), mean_w[c], &s_dy, &s_dyx ZF_PASS);
    part[((size_t)k * C + c) * 2] = s_dy;
    part[((size_t)k * C + c) * 2 + 1] = s_dyx;
}

/* Backward stage 2, one work-item per channel: add the K partials and finish. */
__kernel APPLY_ATTR void bn_bwd_final(__global const acc_t *part, uint C, uint K, __global const acc_t *stat_w,
                                      int is_var, acc_t eps, int fix_gamma, __global acc_t *dbeta_out,
                                      __global acc_t *dgamma_sum, __global acc_t *dgamma_out)
{
    const uint c = get_global_id(0);
    if (c >= C)
        return;
    acc_t s_dy = 0, s_dyx = 0;
    for (uint k = 0; k < K; ++k) {
        s_dy += part[((size_t)k * C + c) * 2];
        s_dyx += part[((size_t)k * C + c) * 2 + 1];
    }
    finish_bwd(c, s_dy, s_dyx, invstd_of(stat_w, c, is_var, eps), fix_gamma, dbeta_out, dgamma_sum, dgamma_out);
}

/* dx over a contiguous run of one channel. */
inline void cf_dx_run(__global const data_t *x, __global const data_t *dy, __global data_t *dx, size_t base,
                      uint len, int train, acc_t a, acc_t mu, acc_t db, acc_t kx, int nt ZB_ARG)
{
#define DY8_AT(i) DACT8(LOAD8(dy, i), LOAD8(x, i) - mu, a, zb)
#define DY1_AT(i) DACT1(LOAD(dy, i), LOAD(x, i) - mu, a, zb)
    uint w = 0;
    if (!train) {
        for (; w + 8 <= len; w += 8)
            STORE8_NT(a * DY8_AT(base + w), dx, base + w, nt);
        for (; w < len; ++w)
            STORE(a * DY1_AT(base + w), dx, base + w);
        return;
    }
    for (; w + 8 <= len; w += 8)
        STORE8_NT(a * (DY8_AT(base + w) - db) - kx * (LOAD8(x, base + w) - mu), dx, base + w, nt);
    for (; w < len; ++w)
        STORE(a * (DY1_AT(base + w) - db) - kx * (LOAD(x, base + w) - mu), dx, base + w);
#undef DY8_AT
#undef DY1_AT
}

/* dx, channel-first, launched like bn_apply. */
/* dx of one 8-value block at f from the factors (vectors or scalars); x is not read in inference. */
#define DX8(A, MU, DB, KX) (train ? (A) * (LOAD8(dy, f) - (DB)) - (KX) * (LOAD8(x, f) - (MU)) : (A) * LOAD8(dy, f))

__kernel ITEM_ATTR void bn_bwd_apply(__global const data_t *x, __global const data_t *dy, __global data_t *dx,
                                     ulong n, uint inner, uint C, uint seg, DX_ARGS, int nt)
{
#ifndef ACT /* an act program's dx goes row by row whatever nt says (no streaming stores) */
    if (nt) { /* aligned blocks, as bn_apply */
        BLOCKS_BEGIN
        acc_t a, mu, db, kx, a2, mu2, db2, kx2;
        dx_factors(cc, DX_PASS, &a, &mu, &db, &kx);
        dx_factors(cn, DX_PASS, &a2, &mu2, &db2, &kx2);
        for (; f + 8 <= f1; f += 8) {
            if (left > 8) {
                STORE8_NT(DX8(a, mu, db, kx), dx, f, 1);
                left -= 8;
                continue;
            }
            const lane8_t first = FIRST_LANES(left);
            STORE8_NT(DX8(MIX(a2, a, first), MIX(mu2, mu, first), MIX(db2, db, first), MIX(kx2, kx, first)), dx, f, 1);
            left += inner - 8;
            cc = cn;
            cn = cc + 1 == C ? 0 : cc + 1;
            a = a2, mu = mu2, db = db2, kx = kx2;
            dx_factors(cn, DX_PASS, &a2, &mu2, &db2, &kx2);
        }
        for (; f < f1; ++f, --left) {
            if (left == 0) {
                a = a2, mu = mu2, db = db2, kx = kx2, left = inner;
            }
            STORE(train ? a * (LOAD(dy, f) - db) - kx * (LOAD(x, f) - mu) : a * LOAD(dy, f), dx, f);
        }
        return;
    }
#endif
    ROWS_BEGIN
    acc_t a, mu, db, kx;
    dx_factors(cc, DX_PASS, &a, &mu, &db, &kx);
    cf_dx_run(x, dy, dx, f, len, train, a, mu, db, kx, 0 ZB_PASS(beta[cc]));
    ROWS_END
}

/* Fused backward: the two sums of each channel of the group, then dx from the cached values. mean_w / stat_w
 * as in bn_apply. (Not in an act program: its backward runs in stages.) */
#ifndef ACT
__kernel ITEM_ATTR void bn_fused_bwd_cf(__global const data_t *x, __global const data_t *dy, __global data_t *dx,
                                        uint C, uint inner, uint G, DX_ARGS, __global acc_t *dgamma_out, int nt,
                                        __local acc8_t *tab8)
{
    __local acc_t *tab = (__local acc_t *)tab8;
    const uint c0 = get_global_id(0) * G, g = min(G, C - c0), outer = m / inner;
    for (uint t = 0; t < g; ++t) {
        __local acc_t *e = tab + t * FUSED_TAB;
        for (uint k = 0; k < FUSED_TAB; ++k)
            e[k] = 0;
        e[E_SHIFT] = mean_w[c0 + t];
    }
    fused_sums(dy, x, 0, C, inner, outer, c0, g, tab);
    for (uint t = 0; t < g; ++t) {
        __local acc_t *e = tab + t * FUSED_TAB;
        sums_t r;
        sums_load(e, &r);
        finish_bwd(c0 + t, sums_first(&r), sums_second(&r), invstd_of(stat_w, c0 + t, is_var, eps), fix_gamma, dbeta,
                   dgamma_sum, dgamma_out);
    }
    for (uint o = outer; o-- > 0;)
        for (uint t = g; t-- > 0;) {
            acc_t a, mu, db, kx;
            dx_factors(c0 + t, DX_PASS, &a, &mu, &db, &kx);
            cf_dx_run(x, dy, dx, ((size_t)o * C + c0 + t) * inner, inner, train, a, mu, db, kx, nt);
        }
}
#endif

/* sg = sum dy, sgx = sum dy (x - mu) per channel of the tile over rows [r0, r1), blocked like tile_sums: 16
 * channels at a time, then 8, then one. (With an act: dy act'(z), the factors of z from ZF_KARGS.) */
inline void tile_bwd_sums(__global const data_t *x, __global const data_t *dy, uint C, uint c0, uint w, uint r0,
                          uint r1, __local const acc_t *mu, __local acc_t *sg, __local acc_t *sgx, __local acc_t *q1,
                          __local acc_t *q2 ZF_KARGS)
{
    for (uint t = 0; t < w; ++t)
        sg[t] = sgx[t] = q1[t] = q2[t] = 0;
    for (uint b0 = r0; b0 < r1; b0 += TILE_BLOCK) {
        const uint b1 = min(b0 + TILE_BLOCK, r1);
        uint t0 = 0;
        for (; t0 + 16 <= w; t0 += 16) {
            const acc8_t m0 = LV8(mu + t0), m1 = LV8(mu + t0 + 8);
            ZF8_OF(c0 + t0, za0, zb0)
            ZF8_OF(c0 + t0 + 8, za1, zb1)
            acc8_t g0 = 0, g1 = 0, h0 = 0, h1 = 0;
            for (uint r = b0; r < b1; ++r) {
                const size_t at = (size_t)r * C + c0 + t0;
                const acc8_t e0 = DACT8(LOAD8(dy, at), LOAD8(x, at) - m0, za0, zb0),
                             e1 = DACT8(LOAD8(dy, at + 8), LOAD8(x, at + 8) - m1, za1, zb1);
                g0 += e0;
                h0 += e0 * (LOAD8(x, at) - m0);
                g1 += e1;
                h1 += e1 * (LOAD8(x, at + 8) - m1);
            }
            ladd8(sg + t0, q1 + t0, g0);
            ladd8(sg + t0 + 8, q1 + t0 + 8, g1);
            ladd8(sgx + t0, q2 + t0, h0);
            ladd8(sgx + t0 + 8, q2 + t0 + 8, h1);
        }
        for (; t0 + 8 <= w; t0 += 8) {
            const acc8_t m0 = LV8(mu + t0);
            ZF8_OF(c0 + t0, za0, zb0)
            acc8_t g0 = 0, h0 = 0;
            for (uint r = b0; r < b1; ++r) {
                const size_t at = (size_t)r * C + c0 + t0;
                const acc8_t e0 = DACT8(LOAD8(dy, at), LOAD8(x, at) - m0, za0, zb0);
                g0 += e0;
                h0 += e0 * (LOAD8(x, at) - m0);
            }
            ladd8(sg + t0, q1 + t0, g0);
            ladd8(sgx + t0, q2 + t0, h0);
        }
        for (; t0 < w; ++t0) {
            ZF_OF(c0 + t0)
            acc_t g0 = 0, h0 = 0;
            for (uint r = b0; r < b1; ++r) {
                const size_t at = (size_t)r * C + c0 + t0;
                const acc_t e0 = DACT1(LOAD(dy, at), LOAD(x, at) - mu[t0], za, zb);
                g0 += e0;
                h0 += e0 * (LOAD(x, at) - mu[t0]);
            }
            ladd(sg + t0, q1 + t0, g0);
            ladd(sgx + t0, q2 + t0, h0);
        }
    }
    for (uint t = 0; t < w; ++t) {
        sg[t] = comp(sg[t], q1[t]);
        sgx[t] = comp(sgx[t], q2[t]);
    }
}

/* dx over rows [r0, r1) of the tile, with the factors in tab (a, mu, db, kx at 0, W, 2 W, 3 W; with an act, beta
 * at 4 W). */
inline void tile_dx(__global const data_t *x, __global const data_t *dy, __global data_t *dx, uint C, uint c0, uint w,
                    uint W, uint r0, uint r1, int train, int nt, __local const acc_t *tab)
{
    __local const acc_t *a = tab, *mu = tab + W, *db = tab + 2 * W, *kx = tab + 3 * W;
#ifdef ACT
    __local const acc_t *zb = tab + 4 * W;
#endif
#define TDY8(i) DACT8(LOAD8(dy, at + i), LOAD8(x, at + i) - LV8(mu + i), LV8(a + i), LV8(zb + i))
#define TDY1(i) DACT1(LOAD(dy, at + i), LOAD(x, at + i) - mu[i], a[i], zb[i])
    for (uint r = r0; r < r1; ++r) {
        const size_t at = (size_t)r * C + c0;
        uint t = 0;
        if (train) {
            for (; t + 8 <= w; t += 8)
                STORE8_NT(LV8(a + t) * (TDY8(t) - LV8(db + t)) - LV8(kx + t) * (LOAD8(x, at + t) - LV8(mu + t)),
                          dx, at + t, nt);
            for (; t < w; ++t)
                STORE(a[t] * (TDY1(t) - db[t]) - kx[t] * (LOAD(x, at + t) - mu[t]), dx, at + t);
        } else {
            for (; t + 8 <= w; t += 8)
                STORE8_NT(LV8(a + t) * TDY8(t), dx, at + t, nt);
            for (; t < w; ++t)
                STORE(a[t] * TDY1(t), dx, at + t);
        }
    }
#undef TDY8
#undef TDY1
}

inline void tile_dx_factors(uint c0, uint w, uint W, DX_ARGS, __local acc_t *tab)
{
    const acc_t fm = (acc_t)m;
    uint t = 0;
    for (; t + 8 <= w; t += 8) { /* 8 channels at once: the same operations as dx_factors, lane by lane */
        const size_t c = c0 + t;
        const acc8_t inv = is_var ? (acc_t)1 / sqrt(vload8(0, stat_w + c) + eps) : vload8(0, stat_w + c);
        const acc8_t a = (fix_gamma ? (acc8_t)1 : vload8(0, gamma + c)) * inv;
        SV8(a, tab + t);
        SV8(vload8(0, mean_w + c), tab + W + t);
        SV8(train ? vload8(0, dbeta + c) / fm : (acc8_t)0, tab + 2 * W + t);
        SV8(train ? a * inv * vload8(0, dgamma_sum + c) / fm : (acc8_t)0, tab + 3 * W + t);
#ifdef ACT
        SV8(vload8(0, beta + c), tab + 4 * W + t);
#endif
    }
    for (; t < w; ++t) {
        acc_t a, mu, db, kx;
        dx_factors(c0 + t, DX_PASS, &a, &mu, &db, &kx);
        tab[t] = a;
        tab[W + t] = mu;
        tab[2 * W + t] = db;
        tab[3 * W + t] = kx;
#ifdef ACT
        tab[4 * W + t] = beta[c0 + t];
#endif
    }
}

/* Partial backward sums: part[(k * C + c) * 2 + {0, 1}] = sum dy, sum dy (x - mean). */
__kernel ITEM_ATTR void bn_bwd_partial_cl(__global const data_t *x, __global const data_t *dy, uint C, uint outer,
                                          uint W, uint chunk, __global const acc_t *mean_w, __global acc_t *part,
                                          __local acc8_t *tab8 ZF_KARGS)
{
    __local acc_t *tab = (__local acc_t *)tab8;
    TILE_BEGIN(outer, TILE_CHUNK)
    for (uint t = 0; t < w; ++t)
        tab[t] = mean_w[c0 + t];
    tile_bwd_sums(x, dy, C, c0, w, r0, r1, tab, tab + Wp, tab + 2 * Wp, tab + 3 * Wp, tab + 4 * Wp ZF_KPASS);
    store_partials(part, C, c0, w, Wp, tab);
}

__kernel ITEM_ATTR void bn_bwd_apply_cl(__global const data_t *x, __global const data_t *dy, __global data_t *dx,
                                        uint C, uint outer, uint W, uint chunk, DX_ARGS, int nt, __local acc8_t *tab8)
{
    __local acc_t *tab = (__local acc_t *)tab8;
    TILE_BEGIN(outer, TILE_LAST_FIRST)
    tile_dx_factors(c0, w, Wp, DX_PASS, tab);
    tile_dx(x, dy, dx, C, c0, w, Wp, r0, r1, train, nt, tab);
}

#ifndef ACT /* an act program's backward runs in stages */
__kernel ITEM_ATTR void bn_fused_bwd_cl(__global const data_t *x, __global const data_t *dy, __global data_t *dx,
                                        uint C, uint W, uint chunk, DX_ARGS, __global acc_t *dgamma_out, int nt,
                                        __local acc8_t *tab8)
{
    __local acc_t *tab = (__local acc_t *)tab8;
    TILE_BEGIN(m, TILE_CHUNK)
    for (uint t = 0; t < w; ++t)
        tab[t] = mean_w[c0 + t];
    tile_bwd_sums(x, dy, C, c0, w, r0, r1, tab, tab + Wp, tab + 2 * Wp, tab + 3 * Wp, tab + 4 * Wp);
    for (uint t = 0; t < w; ++t)
        finish_bwd(c0 + t, tab[Wp + t], tab[2 * Wp + t], invstd_of(stat_w, c0 + t, is_var, eps), fix_gamma, dbeta,
                   dgamma_sum, dgamma_out);
    tile_dx_factors(c0, w, Wp, DX_PASS, tab);
    tile_dx(x, dy, dx, C, c0, w, Wp, r0, r1, train, nt, tab);
}
#endif

#ifndef ACT /* an act program's backward runs in stages */
__kernel ITEM_ATTR void bn_fused_bwd_cft(__global const data_t *x, __global const data_t *dy, __global data_t *dx,
                                         uint C, uint inner, uint outer, uint G, DX_ARGS,
                                         __global acc_t *dgamma_out, int nt, __local acc8_t *tab8)
{
    CFT_BEGIN
    SPREAD(tab, g, inner, mean_w[c0 + t])
    tile_sums_rows(dy, x, 0, row, p0, P, 0, outer, tab, tab + Pp, tab + 2 * Pp, tab + 3 * Pp, tab + 4 * Pp);
    for (uint t = 0; t < g; ++t)
        finish_bwd(c0 + t, channel_total(tab + Pp, t, inner), channel_total(tab + 2 * Pp, t, inner),
                   invstd_of(stat_w, c0 + t, is_var, eps), fix_gamma, dbeta, dgamma_sum, dgamma_out);
    for (uint t = 0; t < g; ++t) {
        acc_t a, mu, db, kx;
        dx_factors(c0 + t, DX_PASS, &a, &mu, &db, &kx);
        for (uint i = 0; i < inner; ++i) {
            tab[t * inner + i] = a;
            tab[Pp + t * inner + i] = mu;
            tab[2 * Pp + t * inner + i] = db;
            tab[3 * Pp + t * inner + i] = kx;
        }
    }
    tile_dx(x, dy, dx, row, p0, P, Pp, 0, outer, train, nt, tab);
}
#endif

/* BatchNorm forward and backward, OpenCL C 1.2.
 *
 * Data x (and dy, y, dx) are viewed as [outer, C, inner], C-contiguous. Two layouts are told apart by the host:
 *   channel-first (inner > 1): a channel is `outer` contiguous runs of `inner` elements;
 *   channel-last  (inner == 1): row o holds one value of every channel, x[o * C + c].
 *
 * Build-time defines (one program per data type):
 *   DATA_HALF    x, y, dy, dx are float16 (vload_half / vstore_half_rte); arithmetic and every per-channel
 *                buffer are float.
 *   DATA_DOUBLE  everything is double (needs cl_khr_fp64).
 *   (neither)    everything is float.
 *   APPLY_LS     work-group size of the two kernels with one work-item per channel (the `final` stages)
 *                (default 64)
 * Every kernel has a fixed work-group size (reqd_work_group_size), so a driver that compiles per launch
 * shape (PoCL) compiles each kernel once. Every other kernel runs one work-item per work-group, and each
 * work-item walks a long contiguous run 8 values at a time (vload8 / vstore8, eight accumulators): on CPU
 * devices that is what vectorises and what amortises the cost of a work-group. A channel-first channel
 * small enough to stay in cache is done whole by one work-item (the fused kernels at the end).
 *
 * Reductions run in stages, so that every shape gives the device enough work-groups:
 *   shift    K_c = the mean of the channel's first SHIFT_SAMPLES values, an estimate of the mean close
 *            enough that sums of x - K_c do not cancel (|K - mean| ~ sigma / 8), recomputed where needed;
 *   partial  one partial per (chunk k, channel c), in a single pass over x: S1 = sum (x - K),
 *            S2 = sum (x - K)^2 and the plain sum P; x - K is exact for offset data (Sterbenz);
 *   final    one work-item per channel adds the K partials: mean = K + S1 / m,
 *            var = (S2 - S1^2 / m) / m (the shifted-data form: never E[x^2] - E[x]^2 around 0).
 * A channel holding Inf or NaN gets the textbook values: mean = P / m (so +Inf stays +Inf) and var = NaN,
 * as (x - mean)^2 is then NaN somewhere.
 */

#ifndef APPLY_LS
#define APPLY_LS 64
#endif
#define SHIFT_SAMPLES 64

#if defined(DATA_DOUBLE)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t;
typedef double8 acc8_t;
typedef double data_t;
#define LOAD(p, i) ((p)[(i)])
#define STORE(v, p, i) ((p)[(i)] = (v))
#define LOAD8(p, i) vload8(0, (p) + (i))
#define STORE8(v, p, i) vstore8((v), 0, (p) + (i))
#elif defined(DATA_HALF)
typedef float acc_t;
typedef float8 acc8_t;
typedef half data_t; /* storage only: vload_half/vstore_half need no extension */
#define LOAD(p, i) vload_half((i), (p))
#define STORE(v, p, i) vstore_half_rte((v), (i), (p))
#define LOAD8(p, i) vload_half8(0, (p) + (i))
#define STORE8(v, p, i) vstore_half8_rte((v), 0, (p) + (i))
#else
typedef float acc_t;
typedef float8 acc8_t;
typedef float data_t;
#define LOAD(p, i) ((p)[(i)])
#define STORE(v, p, i) ((p)[(i)] = (v))
#define LOAD8(p, i) vload8(0, (p) + (i))
#define STORE8(v, p, i) vstore8((v), 0, (p) + (i))
#endif

/* Sum of the eight lanes, pairwise. (Through a private array: Oclgrind 21.10's uninitialised-value checker
 * crashes on the lane swizzles v.s0 ... v.s7.) */
inline acc_t hsum8(acc8_t v)
{
    acc_t t[8];
    vstore8(v, 0, t);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

#define ITEM_ATTR __attribute__((reqd_work_group_size(1, 1, 1)))
#define APPLY_ATTR __attribute__((reqd_work_group_size(APPLY_LS, 1, 1)))

/* The shift of channel c: the mean of its first min(m, SHIFT_SAMPLES) values. Every kernel that needs it
 * recomputes it (a few dozen loads), which saves a launch. */
inline acc_t channel_shift(__global const data_t *x, uint C, uint inner, uint m, uint c)
{
    const uint cnt = min(m, (uint)SHIFT_SAMPLES);
    acc_t s = 0;
    for (uint j = 0; j < cnt; ++j) {
        const uint o = j / inner;
        s += LOAD(x, ((size_t)o * C + c) * inner + (j - o * inner));
    }
    return s / (acc_t)cnt;
}

/* invstd of channel c from a buffer of invstd (is_var == 0) or of variances (is_var != 0: the running
 * variance in inference). */
inline acc_t invstd_of(__global const acc_t *stat, uint c, int is_var, acc_t eps)
{
    return is_var ? (acc_t)1 / sqrt(stat[c] + eps) : stat[c];
}

/* Shifted sums of channel c over its elements [j0, j1), walked as contiguous runs of a row, 8 at a time:
 * s1 += sum (x - K), s2 += sum (x - K)^2, p += sum x. */
inline void cf_sums(__global const data_t *x, uint C, uint inner, uint c, uint j0, uint j1, acc_t K,
                    acc_t *s1, acc_t *s2, acc_t *p)
{
    acc8_t v1 = 0, v2 = 0, vp = 0;
    acc_t t1 = 0, t2 = 0, tp = 0;
    for (uint j = j0; j < j1;) {
        const uint o = j / inner, i = j - o * inner;
        const uint len = min(inner - i, j1 - j);
        const size_t at = ((size_t)o * C + c) * inner + i;
        uint t = 0;
        for (; t + 8 <= len; t += 8) {
            const acc8_t v = LOAD8(x, at + t);
            const acc8_t d = v - K;
            v1 += d;
            v2 += d * d;
            vp += v;
        }
        for (; t < len; ++t) {
            const acc_t v = LOAD(x, at + t);
            const acc_t d = v - K;
            t1 += d;
            t2 += d * d;
            tp += v;
        }
        j += len;
    }
    *s1 += t1 + hsum8(v1);
    *s2 += t2 + hsum8(v2);
    *p += tp + hsum8(vp);
}

/* Partial, channel-first: work-item (k, c) = (get_global_id(0), get_global_id(1)) covers elements
 * [k * chunk, min((k + 1) * chunk, m)) of channel c. part[(k * C + c) * 3 + {0,1,2}] = S1, S2, P. */
__kernel ITEM_ATTR void bn_stats_partial_cf(__global const data_t *x, uint C, uint inner, uint m, uint chunk,
                                            __global acc_t *part)
{
    const uint k = get_global_id(0), c = get_global_id(1);
    acc_t s1 = 0, s2 = 0, p = 0;
    cf_sums(x, C, inner, c, k * chunk, min(k * chunk + chunk, m), channel_shift(x, C, inner, m, c), &s1, &s2, &p);
    __global acc_t *q = part + ((size_t)k * C + c) * 3;
    q[0] = s1;
    q[1] = s2;
    q[2] = p;
}

/* Partial, channel-last: work-item (b, k) covers channels [16 b, 16 b + 16) (one 64-byte line of float
 * per row) over rows [k * chunk, min((k + 1) * chunk, outer)); a last block of fewer channels goes one by one. */
__kernel ITEM_ATTR void bn_stats_partial_cl(__global const data_t *x, uint C, uint outer, uint chunk,
                                            __global acc_t *part)
{
    const uint c0 = get_global_id(0) * 16, k = get_global_id(1);
    const uint r0 = k * chunk, r1 = min(r0 + chunk, outer);
    if (c0 + 16 <= C) {
        acc_t ks[16];
        for (uint j = 0; j < 16; ++j)
            ks[j] = channel_shift(x, C, 1, outer, c0 + j);
        const acc8_t ka = vload8(0, ks), kb = vload8(1, ks);
        acc8_t s1a = 0, s2a = 0, pa = 0, s1b = 0, s2b = 0, pb = 0;
        for (uint r = r0; r < r1; ++r) {
            const size_t at = (size_t)r * C + c0;
            const acc8_t va = LOAD8(x, at), vb = LOAD8(x, at + 8);
            const acc8_t da = va - ka, db = vb - kb;
            s1a += da;
            s2a += da * da;
            pa += va;
            s1b += db;
            s2b += db * db;
            pb += vb;
        }
        acc_t t1[16], t2[16], tp[16];
        vstore8(s1a, 0, t1);
        vstore8(s1b, 1, t1);
        vstore8(s2a, 0, t2);
        vstore8(s2b, 1, t2);
        vstore8(pa, 0, tp);
        vstore8(pb, 1, tp);
        for (uint j = 0; j < 16; ++j) {
            __global acc_t *q = part + ((size_t)k * C + c0 + j) * 3;
            q[0] = t1[j];
            q[1] = t2[j];
            q[2] = tp[j];
        }
        return;
    }
    for (uint c = c0; c < C; ++c) {
        const acc_t K = channel_shift(x, C, 1, outer, c);
        acc_t s1 = 0, s2 = 0, p = 0;
        for (uint r = r0; r < r1; ++r) {
            const acc_t v = LOAD(x, (size_t)r * C + c);
            const acc_t d = v - K;
            s1 += d;
            s2 += d * d;
            p += v;
        }
        __global acc_t *q = part + ((size_t)k * C + c) * 3;
        q[0] = s1;
        q[1] = s2;
        q[2] = p;
    }
}

/* The statistics of channel c from its shifted sums: write the batch statistics, update the running ones,
 * fill the work buffers mean_w / invstd_w; returns nothing, the work buffers carry the result.
 *   momentum        the framework-style parameter p: momentum_new == 0: running = p running + (1 - p) batch,
 *                   momentum_new != 0: running = (1 - p) running + p batch
 *   unbiased        != 0: the running variance moves towards var * m / (m - 1)
 *   want_invstd     != 0: stat_out gets invstd, else the biased batch variance */
#define STATS_ARGS acc_t eps, acc_t momentum, int momentum_new, int unbiased, int want_invstd,                \
                   __global acc_t *running_mean, __global acc_t *running_var, __global acc_t *mean_out,     \
                   __global acc_t *stat_out, __global acc_t *mean_w, __global acc_t *invstd_w
#define STATS_PASS eps, momentum, momentum_new, unbiased, want_invstd, running_mean, running_var, mean_out, \
                   stat_out, mean_w, invstd_w

inline void finish_stats(uint c, uint m, acc_t shift, acc_t s1, acc_t s2, acc_t p, STATS_ARGS)
{
    const acc_t fm = (acc_t)m;
    const acc_t d = s1 / fm; /* mean - shift */
    acc_t mean = shift + d;
    acc_t var;
    if (isfinite(mean)) {
        var = (s2 - d * s1) / fm; /* +Inf when the squares overflow */
        if (var < (acc_t)0)      /* rounding only; written so that NaN stays NaN */
            var = (acc_t)0;
    } else { /* Inf or NaN in the channel: the textbook mean, and (x - mean)^2 is NaN somewhere */
        mean = p / fm;
        var = NAN;
    }
    const acc_t invstd = (acc_t)1 / sqrt(var + eps);
    mean_out[c] = mean;
    stat_out[c] = want_invstd ? invstd : var;
    mean_w[c] = mean;
    invstd_w[c] = invstd;
    const acc_t w_old = momentum_new ? (acc_t)1 - momentum : momentum;
    const acc_t w_new = momentum_new ? momentum : (acc_t)1 - momentum;
    const acc_t var_run = unbiased ? var * fm / (acc_t)(m - 1) : var; /* m = 1: 0/0 = NaN, as the formula */
    running_mean[c] = w_old * running_mean[c] + w_new * mean;
    running_var[c] = w_old * running_var[c] + w_new * var_run;
}

/* Final, one work-item per channel: add the K partials and finish. */
__kernel APPLY_ATTR void bn_stats_final(__global const acc_t *part, __global const data_t *x, uint C, uint inner,
                                        uint K, uint m, STATS_ARGS)
{
    const uint c = get_global_id(0);
    if (c >= C)
        return;
    acc_t s1 = 0, s2 = 0, p = 0;
    for (uint k = 0; k < K; ++k) {
        __global const acc_t *q = part + ((size_t)k * C + c) * 3;
        s1 += q[0];
        s2 += q[1];
        p += q[2];
    }
    finish_stats(c, m, channel_shift(x, C, inner, m, c), s1, s2, p, STATS_PASS);
}

/* y over a contiguous run of one channel: (x - mu) * a + b. */
inline void cf_apply_run(__global const data_t *x, __global data_t *y, size_t base, uint len, acc_t mu, acc_t a,
                         acc_t b)
{
    uint w = 0;
    for (; w + 8 <= len; w += 8)
        STORE8((LOAD8(x, base + w) - mu) * a + b, y, base + w);
    for (; w < len; ++w)
        STORE((LOAD(x, base + w) - mu) * a + b, y, base + w);
}

/* Elementwise kernels: work-item g handles the flat elements [g * seg, min((g + 1) * seg, n)), row by row
 * (a row is `inner` elements of one channel, channel-first, or the C channels of one position, channel-last),
 * so short rows (7x7 maps) and long ones get the same amount of work per item. */
#define ROWS_BEGIN                                                                          \
    const size_t f1 = min((size_t)(get_global_id(0) + 1) * seg, (size_t)n);                \
    for (size_t f = (size_t)get_global_id(0) * seg; f < f1;) {                             \
        const size_t row = f / width;                                                      \
        const uint w0 = (uint)(f - row * width);                                           \
        const uint len = (uint)min((size_t)(width - w0), f1 - f);                           \
        const size_t base = f - w0;                                                        \
        const uint cc = chan_last ? 0 : (uint)(row % C);
#define ROWS_END                                                                            \
        f += len;                                                                          \
    }

/* y = (x - mean) * invstd * gamma + beta. fix_gamma != 0: gamma is taken as 1. mean_w and stat_w are the
 * batch mean and invstd (training, is_var == 0) or the running mean and variance (inference, is_var != 0). */
__kernel ITEM_ATTR void bn_apply(__global const data_t *x, __global data_t *y, ulong n, uint width, uint C,
                                 uint seg, int chan_last, __global const acc_t *mean_w,
                                 __global const acc_t *stat_w, int is_var, acc_t eps, __global const acc_t *gamma,
                                 __global const acc_t *beta, int fix_gamma)
{
    ROWS_BEGIN
    if (chan_last) {
        for (uint w = w0; w < w0 + len; ++w) {
            const acc_t a = (fix_gamma ? (acc_t)1 : gamma[w]) * invstd_of(stat_w, w, is_var, eps);
            STORE((LOAD(x, base + w) - mean_w[w]) * a + beta[w], y, base + w);
        }
    } else {
        const acc_t a = (fix_gamma ? (acc_t)1 : gamma[cc]) * invstd_of(stat_w, cc, is_var, eps);
        cf_apply_run(x, y, base + w0, len, mean_w[cc], a, beta[cc]);
    }
    ROWS_END
}

/* Backward sums of channel c over its elements [j0, j1): s_dy += sum dy, s_dyx += sum dy (x - mu). */
inline void cf_bwd_sums(__global const data_t *x, __global const data_t *dy, uint C, uint inner, uint c, uint j0,
                        uint j1, acc_t mu, acc_t *s_dy, acc_t *s_dyx)
{
    acc8_t vg = 0, vgx = 0;
    acc_t tg = 0, tgx = 0;
    for (uint j = j0; j < j1;) {
        const uint o = j / inner, i = j - o * inner;
        const uint len = min(inner - i, j1 - j);
        const size_t at = ((size_t)o * C + c) * inner + i;
        uint t = 0;
        for (; t + 8 <= len; t += 8) {
            const acc8_t g = LOAD8(dy, at + t);
            vg += g;
            vgx += g * (LOAD8(x, at + t) - mu);
        }
        for (; t < len; ++t) {
            const acc_t g = LOAD(dy, at + t);
            tg += g;
            tgx += g * (LOAD(x, at + t) - mu);
        }
        j += len;
    }
    *s_dy += tg + hsum8(vg);
    *s_dyx += tgx + hsum8(vgx);
}

/* Backward stage 1, channel-first: part[(k * C + c) * 2 + {0, 1}] = sum dy, sum dy * (x - mean) over the
 * chunk k of channel c. mean_w: the batch mean (training) or the running mean (inference). */
__kernel ITEM_ATTR void bn_bwd_partial_cf(__global const data_t *x, __global const data_t *dy, uint C, uint inner,
                                          uint m, uint chunk, __global const acc_t *mean_w, __global acc_t *part)
{
    const uint k = get_global_id(0), c = get_global_id(1);
    acc_t s_dy = 0, s_dyx = 0;
    cf_bwd_sums(x, dy, C, inner, c, k * chunk, min(k * chunk + chunk, m), mean_w[c], &s_dy, &s_dyx);
    part[((size_t)k * C + c) * 2] = s_dy;
    part[((size_t)k * C + c) * 2 + 1] = s_dyx;
}

/* Backward stage 1, channel-last: blocks of 16 channels like bn_stats_partial_cl. */
__kernel ITEM_ATTR void bn_bwd_partial_cl(__global const data_t *x, __global const data_t *dy, uint C, uint outer,
                                          uint chunk, __global const acc_t *mean_w, __global acc_t *part)
{
    const uint c0 = get_global_id(0) * 16, k = get_global_id(1);
    const uint r0 = k * chunk, r1 = min(r0 + chunk, outer);
    if (c0 + 16 <= C) {
        const acc8_t ma = vload8(0, mean_w + c0), mb = vload8(0, mean_w + c0 + 8);
        acc8_t ga = 0, gxa = 0, gb = 0, gxb = 0;
        for (uint r = r0; r < r1; ++r) {
            const size_t at = (size_t)r * C + c0;
            const acc8_t da = LOAD8(dy, at), db = LOAD8(dy, at + 8);
            ga += da;
            gxa += da * (LOAD8(x, at) - ma);
            gb += db;
            gxb += db * (LOAD8(x, at + 8) - mb);
        }
        acc_t tg[16], tgx[16];
        vstore8(ga, 0, tg);
        vstore8(gb, 1, tg);
        vstore8(gxa, 0, tgx);
        vstore8(gxb, 1, tgx);
        for (uint j = 0; j < 16; ++j) {
            part[((size_t)k * C + c0 + j) * 2] = tg[j];
            part[((size_t)k * C + c0 + j) * 2 + 1] = tgx[j];
        }
        return;
    }
    for (uint c = c0; c < C; ++c) {
        const acc_t mu = mean_w[c];
        acc_t s_dy = 0, s_dyx = 0;
        for (uint r = r0; r < r1; ++r) {
            const size_t at = (size_t)r * C + c;
            const acc_t g = LOAD(dy, at);
            s_dy += g;
            s_dyx += g * (LOAD(x, at) - mu);
        }
        part[((size_t)k * C + c) * 2] = s_dy;
        part[((size_t)k * C + c) * 2 + 1] = s_dyx;
    }
}

/* dbeta = sum dy, dgamma = invstd * sum dy (x - mean) of channel c; dgamma_sum keeps the value for the dx
 * kernels, dgamma_out gets 0 when fix_gamma != 0. */
inline void finish_bwd(uint c, acc_t s_dy, acc_t s_dyx, acc_t inv, int fix_gamma, __global acc_t *dbeta_out,
                       __global acc_t *dgamma_sum, __global acc_t *dgamma_out)
{
    const acc_t dg = s_dyx * inv;
    dbeta_out[c] = s_dy;
    dgamma_sum[c] = dg;
    dgamma_out[c] = fix_gamma ? (acc_t)0 : dg;
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

/* dx over a contiguous run of one channel: a dy (inference: x is not read, so an Inf in x cannot reach dx)
 * or a (dy - db) - kx (x - mu) (training). */
inline void cf_dx_run(__global const data_t *x, __global const data_t *dy, __global data_t *dx, size_t base,
                      uint len, int train, acc_t a, acc_t mu, acc_t db, acc_t kx)
{
    uint w = 0;
    if (!train) {
        for (; w + 8 <= len; w += 8)
            STORE8(a * LOAD8(dy, base + w), dx, base + w);
        for (; w < len; ++w)
            STORE(a * LOAD(dy, base + w), dx, base + w);
        return;
    }
    for (; w + 8 <= len; w += 8)
        STORE8(a * (LOAD8(dy, base + w) - db) - kx * (LOAD8(x, base + w) - mu), dx, base + w);
    for (; w < len; ++w)
        STORE(a * (LOAD(dy, base + w) - db) - kx * (LOAD(x, base + w) - mu), dx, base + w);
}

/* dx, launched like bn_apply.
 *   train != 0: dx = gamma invstd (dy - dbeta / m - xhat dgamma / m), xhat = (x - mean) invstd
 *   train == 0: dx = gamma invstd dy   (invstd of the running variance: a constant; x is not read, so an
 *               Inf in x cannot reach dx) */
__kernel ITEM_ATTR void bn_bwd_apply(__global const data_t *x, __global const data_t *dy, __global data_t *dx,
                                     ulong n, uint width, uint C, uint seg, int chan_last, uint m,
                                     __global const acc_t *mean_w, __global const acc_t *stat_w, int is_var,
                                     acc_t eps, __global const acc_t *gamma, int fix_gamma,
                                     __global const acc_t *dbeta, __global const acc_t *dgamma_sum, int train)
{
    const acc_t fm = (acc_t)m;
    ROWS_BEGIN
    if (chan_last) {
        for (uint w = w0; w < w0 + len; ++w) {
            const acc_t inv = invstd_of(stat_w, w, is_var, eps), a = (fix_gamma ? (acc_t)1 : gamma[w]) * inv;
            const acc_t g = LOAD(dy, base + w);
            const acc_t r = train ? a * (g - dbeta[w] / fm - (LOAD(x, base + w) - mean_w[w]) * inv * dgamma_sum[w] / fm)
                                  : a * g;
            STORE(r, dx, base + w);
        }
    } else {
        const acc_t inv = invstd_of(stat_w, cc, is_var, eps), a = (fix_gamma ? (acc_t)1 : gamma[cc]) * inv;
        const acc_t db = train ? dbeta[cc] / fm : (acc_t)0, kx = train ? a * inv * dgamma_sum[cc] / fm : (acc_t)0;
        cf_dx_run(x, dy, dx, base + w0, len, train, a, mean_w[cc], db, kx);
    }
    ROWS_END
}

/* Fused, channel-first, one work-item per channel whose values fit in cache: the statistics in one pass
 * over the channel, then y from the cached values. One launch, and x crosses the memory bus once. */
__kernel ITEM_ATTR void bn_fused_train_cf(__global const data_t *x, __global data_t *y, uint C, uint inner, uint m,
                                          __global const acc_t *gamma, __global const acc_t *beta, int fix_gamma,
                                          STATS_ARGS)
{
    const uint c = get_global_id(0);
    const acc_t shift = channel_shift(x, C, inner, m, c);
    acc_t s1 = 0, s2 = 0, p = 0;
    cf_sums(x, C, inner, c, 0, m, shift, &s1, &s2, &p);
    finish_stats(c, m, shift, s1, s2, p, STATS_PASS);
    const acc_t a = (fix_gamma ? (acc_t)1 : gamma[c]) * invstd_w[c], mu = mean_w[c], b = beta[c];
    for (uint o = 0; o < m / inner; ++o)
        cf_apply_run(x, y, ((size_t)o * C + c) * inner, inner, mu, a, b);
}

/* Fused backward, channel-first, one work-item per channel: the two sums, then dx from the cached values.
 * mean_w / stat_w as in bn_apply. */
__kernel ITEM_ATTR void bn_fused_bwd_cf(__global const data_t *x, __global const data_t *dy, __global data_t *dx,
                                        uint C, uint inner, uint m, __global const acc_t *mean_w,
                                        __global const acc_t *stat_w, int is_var, acc_t eps,
                                        __global const acc_t *gamma, int fix_gamma, __global acc_t *dbeta_out,
                                        __global acc_t *dgamma_sum, __global acc_t *dgamma_out, int train)
{
    const uint c = get_global_id(0);
    const acc_t mu = mean_w[c], inv = invstd_of(stat_w, c, is_var, eps);
    acc_t s_dy = 0, s_dyx = 0;
    cf_bwd_sums(x, dy, C, inner, c, 0, m, mu, &s_dy, &s_dyx);
    finish_bwd(c, s_dy, s_dyx, inv, fix_gamma, dbeta_out, dgamma_sum, dgamma_out);
    const acc_t fm = (acc_t)m, a = (fix_gamma ? (acc_t)1 : gamma[c]) * inv;
    const acc_t db = train ? s_dy / fm : (acc_t)0, kx = train ? a * inv * dgamma_sum[c] / fm : (acc_t)0;
    for (uint o = 0; o < m / inner; ++o)
        cf_dx_run(x, dy, dx, ((size_t)o * C + c) * inner, inner, train, a, mu, db, kx);
}

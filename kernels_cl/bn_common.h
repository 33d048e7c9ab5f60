/* bn_common.h: what every BatchNorm kernel family shares, OpenCL C 1.2.
 *
 * WHAT IT PROVIDES. The host (conformance/backends/opencl.py, program_source()) builds one program per (device,
 * family, dtype, switches) from this header followed by the family's files kernels_cl/<family>_*.cl (in name
 * order, or the order of its planner's SOURCES). A family file may say `#include "bn_common.h"`: the host puts
 * the header first and drops that line, so a family file is also valid C on its own. This header gives every family: the storage and accumulator
 * types per dtype (data_t, acc_t, acc8_t) and their loads and stores (LOAD, STORE, LOAD8, STORE8, STORE8_NT,
 * PREFETCH_AT); the activation and its derivative for the ACT_* switches (ACT1, ACT8, DACT1, DACT8; identities
 * without a switch); 8-value local-memory access (LV8, SV8); compensated summation (kadd, kadd8, comp, comp8,
 * hsum8, sums_t, SUM_BLOCK); the statistics' shift (channel_shift, SHIFT_SAMPLES, SHIFT_ROWS), the plain sum of
 * a non-finite channel (channel_sum), invstd_of; and the per-channel finishing every family must do the same
 * way so that all give the same statuses: finish_stats() (batch statistics from shifted sums, the running
 * update with KEEP_RUNNING / NORM_RUNNING, the work buffers mean_w / invstd_w; STATS_ARGS / STATS_PASS),
 * apply_factors() (y = (x - mu) a + b), finish_bwd() (dbeta, dgamma) and dx_factors() (dx = a (dy - db) -
 * kx (x - mu); DX_ARGS / DX_PASS), with the act's extra kernel arguments (ZF_KARGS, ZF_OF, ZF8_OF, DX_BETA_ARG,
 * ZB_ARG). Work-group sizes, work splits and the summation walkers are the family's own (cpu_base.cl for
 * `cpu`).
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
 *   APPLY_LS     work-group size of the kernels with one work-item per channel (the cpu family's `final`
 *                stages) (default 64)
 *   NT_STORES    the device's tuning has streaming stores: kernels that write y or dx take `int nt` and, when
 *                the host sets it (large outputs, aligned stores), write past the caches
 *   PREFETCH     the device's tuning has software prefetch (PREFETCH_AT is a real instruction)
 * and, per case (none of them: the default, and every macro they touch expands to the code without them):
 *   ACT_RELU, ACT_SIGMOID, ACT_TANH   y = act(z), z the affine output; backward takes dy act'(z) (section
 *                "Activation" below). The cpu family's act program has no fused backward kernels: the host runs
 *                backward in stages (partial sums, final, elementwise), each of which recomputes z from x.
 *   KEEP_RUNNING the statistics kernels leave the running statistics alone (training with update_running=0)
 *   NORM_RUNNING the statistics kernels update the running statistics but hand the elementwise kernels the
 *                running statistics as they were before the update (inference with update_running=1: the
 *                host runs the training kernels, which then normalise with those)
 * In place (y over x, dx over dy) takes no define: the host passes one buffer as both arguments. Every kernel
 * that writes y or dx reads each element of x (dy) before it writes that element, in the same work-item, and
 * no kernel reads it after, so the kernels are correct when the two alias (nothing is declared restrict).
 *
 * The statistics (every family):
 *   shift    K_c = the mean of the channel's first SHIFT_SAMPLES values (channel-last: first SHIFT_ROWS rows),
 *            an estimate of the mean close enough that sums of x - K_c do not cancel, recomputed where needed;
 *   sums     S1 = sum (x - K), S2 = sum (x - K)^2 (x - K is exact for offset data: Sterbenz), blocked and
 *            compensated; backward: sum dy and sum dy (x - mean), by the same functions (sums of u and u v);
 *   finish   mean = K + S1 / m, var = (S2 - S1^2 / m) / m (the shifted-data form: never E[x^2] - E[x]^2
 *            around 0): finish_stats().
 * A channel holding Inf or NaN gets the textbook values: mean = (plain sum) / m, recomputed for that channel
 * only (so +Inf stays +Inf), and var = NaN, as (x - mean)^2 is then NaN somewhere.
 */

#ifndef BN_COMMON_H
#define BN_COMMON_H

#ifndef APPLY_LS
#define APPLY_LS 64
#endif
#define SHIFT_SAMPLES 64
#define SHIFT_ROWS 16 /* channel-last: the shift is the mean of the first rows */

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
#ifdef NT_STORES
#pragma OPENCL EXTENSION cl_khr_fp16 : enable /* only fp16 devices build this program */
#define NT_STORE8(v, p, i) __builtin_nontemporal_store(as_ushort8(convert_half8_rte(v)), (__global ushort8 *)((p) + (i)))
#endif
#else
typedef float acc_t;
typedef float8 acc8_t;
typedef float data_t;
#define LOAD(p, i) ((p)[(i)])
#define STORE(v, p, i) ((p)[(i)] = (v))
#define LOAD8(p, i) vload8(0, (p) + (i))
#define STORE8(v, p, i) vstore8((v), 0, (p) + (i))
#endif

/* Streaming stores (NT_STORES, set by the host where the device's tuning asks for them): 8 values written past
 * the caches, so writing y or dx neither reads its lines from memory first nor evicts x and dy, which the
 * second pass of a kernel reads again. Kernels take `int nt`; the host sets it only for outputs large enough
 * (the tuning's nt_bytes) whose every 8-value store is aligned to its own size (the instruction demands it). */
#if defined(NT_STORES) && !defined(DATA_HALF)
#define NT_STORE8(v, p, i) __builtin_nontemporal_store((v), (__global acc8_t *)((p) + (i)))
#endif
#ifdef NT_STORES
#define STORE8_NT(v, p, i, nt)   \
    do {                         \
        if (nt)                  \
            NT_STORE8(v, p, i);  \
        else                     \
            STORE8(v, p, i);     \
    } while (0)
#else
#define STORE8_NT(v, p, i, nt) STORE8(v, p, i)
#endif

/* Software prefetch (PREFETCH, set by the host where the device's tuning asks for it: a clang builtin, which
 * an unknown compiler may lack; OpenCL's own prefetch() compiles to nothing on PoCL): a hint that reads the line
 * at p into cache, never faults. */
#ifdef PREFETCH
#define PREFETCH_AT(p) __builtin_prefetch((p), 0, 3)
#else
#define PREFETCH_AT(p) ((void)0)
#endif

/* ---- Activation ---------------------------------------------------------------------------------------------
 * y = act(z), z = (x - mu) a + b the affine output. relu(z) = z <= 0 ? 0 : z (NaN stays NaN), relu'(z) = 1 for
 * z > 0, 0 for z <= 0 and NaN for NaN; sigmoid(z) = 1 / (1 + e^-z), sigmoid' = s (1 - s); tanh' = 1 - t^2
 * (computed as 1 / cosh^2, below).
 * Backward recomputes z from x in the accumulator type (never from the stored y: a float16 y would cost act' its
 * precision) with the forward's factors: z = v za + zb, v = x - mu, za = gamma invstd, zb = beta.
 *   ACT1(z), ACT8(z)            act of a scalar, of 8 lanes (no act: z itself)
 *   DACT1(g, v, za, zb), DACT8  g act'(v za + zb): the gradient g = dy taken through act (no act: g itself) */
#if defined(ACT_RELU) || defined(ACT_SIGMOID) || defined(ACT_TANH)
#define ACT
#if defined(ACT_RELU)
inline acc_t act1(acc_t z) { return z <= (acc_t)0 ? (acc_t)0 : z; }
inline acc8_t act8(acc8_t z) { return select(z, (acc8_t)0, z <= (acc8_t)0); }
inline acc_t dact1(acc_t z) { return z > (acc_t)0 ? (acc_t)1 : isnan(z) ? (acc_t)NAN : (acc_t)0; }
inline acc8_t dact8(acc8_t z) { return select(select((acc8_t)0, (acc8_t)NAN, isnan(z)), (acc8_t)1, z > (acc8_t)0); }
#elif defined(ACT_SIGMOID)
inline acc_t act1(acc_t z) { return (acc_t)1 / ((acc_t)1 + exp(-z)); }
inline acc8_t act8(acc8_t z) { return (acc_t)1 / ((acc_t)1 + exp(-z)); }
inline acc_t dact1(acc_t z) { const acc_t s = act1(z); return s * ((acc_t)1 - s); }
inline acc8_t dact8(acc8_t z) { const acc8_t s = act8(z); return s * ((acc_t)1 - s); }
#else /* tanh' = 1 - t^2 taken as sech^2 = 1 / cosh^2: exactly 0 at z = +-Inf (and wherever cosh^2 overflows),
       * where 1 - t^2 is not with a tanh that stops an ulp short of 1 (PoCL 3.1: tanh(Inf) = 0.99999994f) */
inline acc_t act1(acc_t z) { return tanh(z); }
inline acc8_t act8(acc8_t z) { return tanh(z); }
inline acc_t dact1(acc_t z) { const acc_t c = cosh(z); return (acc_t)1 / (c * c); }
inline acc8_t dact8(acc8_t z) { const acc8_t c = cosh(z); return (acc_t)1 / (c * c); }
#endif
#define ACT1(z) act1(z)
#define ACT8(z) act8(z)
#define DACT1(g, v, za, zb) ((g) * dact1((v) * (za) + (zb)))
#define DACT8(g, v, za, zb) ((g) * dact8((v) * (za) + (zb)))
#else
#define ACT1(z) z
#define ACT8(z) z
#define DACT1(g, v, za, zb) g
#define DACT8(g, v, za, zb) g
#endif

/* 8 values of a local-memory table at p, p a multiple of 8 values into the table (the tables are laid out so,
 * and a kernel's __local acc8_t * argument is aligned to its type): one aligned vector load or store. PoCL
 * compiles vload8 / vstore8 of local memory as pairs of 2-value moves, and then the arithmetic and the global
 * loads beside them too (a channel-last statistics pass ran at half speed). */
#define LV8(p) (*(__local const acc8_t *)(p))
#define SV8(v, p) (*(__local acc8_t *)(p) = (v))

/* Sum of the eight lanes, pairwise. (Through a private array: Oclgrind 21.10's uninitialised-value checker
 * crashes on the lane swizzles v.s0 ... v.s7.) */
inline acc_t hsum8(acc8_t v)
{
    acc_t t[8];
    vstore8(v, 0, t);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

/* Long sums are blocked: fresh accumulators take at most SUM_BLOCK values (channel-first; TILE_BLOCK rows
 * channel-last), then the block's total joins a running sum with its rounding error kept (Neumaier). One long
 * chain of additions would drift: float16 data are few distinct values, so the roundings of a growing sum lean
 * one way (a 100352-value channel was 3.9e-5 off in var, about 650 float32 ulps, with chains of 3136 adds). */
#define SUM_BLOCK 1024
#define TILE_BLOCK 32

/* Running sums of two quantities, vector lanes (s1, s2) and scalars (t1, t2), each with its compensation. */
typedef struct {
    acc8_t s1, c1, s2, c2;
    acc_t t1, u1, t2, u2;
} sums_t;

inline void sums_zero(sums_t *r)
{
    r->s1 = r->c1 = r->s2 = r->c2 = 0;
    r->t1 = r->u1 = r->t2 = r->u2 = 0;
}

/* *s += v with the rounding error of the addition added to *c. */
inline void kadd8(acc8_t *s, acc8_t *c, acc8_t v)
{
    const acc8_t t = *s + v;
    *c += fabs(*s) >= fabs(v) ? (*s - t) + v : (v - t) + *s;
    *s = t;
}

inline void kadd(acc_t *s, acc_t *c, acc_t v)
{
    const acc_t t = *s + v;
    *c += fabs(*s) >= fabs(v) ? (*s - t) + v : (v - t) + *s;
    *s = t;
}

/* A sum plus its compensation; a sum that reached Inf or NaN is taken as it is (its compensation is NaN). */
inline acc8_t comp8(acc8_t s, acc8_t c) { return isfinite(s) ? s + c : s; }
inline acc_t comp(acc_t s, acc_t c) { return isfinite(s) ? s + c : s; }

inline acc_t sums_first(const sums_t *r) { return comp(r->t1, r->u1) + hsum8(comp8(r->s1, r->c1)); }
inline acc_t sums_second(const sums_t *r) { return comp(r->t2, r->u2) + hsum8(comp8(r->s2, r->c2)); }

/* The shift of channel c: the mean of its first min(m, SHIFT_SAMPLES) values. Every kernel that needs it
 * recomputes it (a few dozen loads), which saves a launch. */
inline acc_t channel_shift(__global const data_t *x, uint C, uint inner, uint m, uint c)
{
    const uint cnt = min(m, inner == 1 ? (uint)SHIFT_ROWS : (uint)SHIFT_SAMPLES);
    acc_t s = 0;
    for (uint o = 0, j = 0; j < cnt; ++o) /* row by row: no division per value */
        for (uint i = 0; i < inner && j < cnt; ++i, ++j)
            s += LOAD(x, ((size_t)o * C + c) * inner + i);
    return s / (acc_t)cnt;
}

/* Plain sum of channel c, for the rare channel whose shifted mean is not finite (Inf or NaN in it). */
inline acc_t channel_sum(__global const data_t *x, uint C, uint inner, uint m, uint c)
{
    acc_t s = 0;
    for (uint j = 0; j < m; ++j) {
        const uint o = j / inner;
        s += LOAD(x, ((size_t)o * C + c) * inner + (j - o * inner));
    }
    return s;
}

/* invstd of channel c from a buffer of invstd (is_var == 0) or of variances (is_var != 0: the running
 * variance in inference). */
inline acc_t invstd_of(__global const acc_t *stat, uint c, int is_var, acc_t eps)
{
    return is_var ? (acc_t)1 / sqrt(stat[c] + eps) : stat[c];
}

/* The statistics of channel c from its shifted sums: write the batch statistics, update the running ones (not
 * with KEEP_RUNNING), fill the work buffers mean_w / invstd_w (the batch mean and invstd the elementwise kernels
 * read; with NORM_RUNNING the running mean and invstd as they were before the update).
 *   momentum        the framework-style parameter p: momentum_new == 0: running = p running + (1 - p) batch,
 *                   momentum_new != 0: running = (1 - p) running + p batch
 *   unbiased        != 0: the running variance moves towards var * m / (m - 1)
 *   want_invstd     != 0: stat_out gets invstd, else the biased batch variance */
#define STATS_ARGS acc_t eps, acc_t momentum, int momentum_new, int unbiased, int want_invstd,                \
                   __global acc_t *running_mean, __global acc_t *running_var, __global acc_t *mean_out,     \
                   __global acc_t *stat_out, __global acc_t *mean_w, __global acc_t *invstd_w
#define STATS_PASS eps, momentum, momentum_new, unbiased, want_invstd, running_mean, running_var, mean_out, \
                   stat_out, mean_w, invstd_w

inline void finish_stats(__global const data_t *x, uint C, uint inner, uint c, uint m, acc_t shift, acc_t s1,
                         acc_t s2, STATS_ARGS)
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
        mean = channel_sum(x, C, inner, m, c) / fm;
        var = NAN;
    }
    const acc_t invstd = (acc_t)1 / sqrt(var + eps);
    mean_out[c] = mean;
    stat_out[c] = want_invstd ? invstd : var;
#ifdef NORM_RUNNING /* inference that updates: normalise with the running statistics as they are before the update */
    mean_w[c] = running_mean[c];
    invstd_w[c] = (acc_t)1 / sqrt(running_var[c] + eps);
#else
    mean_w[c] = mean;
    invstd_w[c] = invstd;
#endif
#ifndef KEEP_RUNNING
    const acc_t w_old = momentum_new ? (acc_t)1 - momentum : momentum;
    const acc_t w_new = momentum_new ? momentum : (acc_t)1 - momentum;
    const acc_t var_run = unbiased ? var * fm / (acc_t)(m - 1) : var; /* m = 1: 0/0 = NaN, as the formula */
    running_mean[c] = w_old * running_mean[c] + w_new * mean;
    running_var[c] = w_old * running_var[c] + w_new * var_run;
#endif
}

/* The per-channel factors of y = (x - mu) a + b for channel c. */
inline void apply_factors(uint c, __global const acc_t *mean_w, __global const acc_t *stat_w, int is_var, acc_t eps,
                          __global const acc_t *gamma, __global const acc_t *beta, int fix_gamma, acc_t *mu,
                          acc_t *a, acc_t *b)
{
    *mu = mean_w[c];
    *a = (fix_gamma ? (acc_t)1 : gamma[c]) * invstd_of(stat_w, c, is_var, eps);
    *b = beta[c];
}

/* An act program's backward kernels take dy act'(z), z = (x - mean) za + zb with the forward's factors
 * za = gamma invstd, zb = beta: the partial sums kernels get what makes them (ZF_KARGS; ZF_OF(c) and
 * ZF8_OF(c, za, zb) declare them for channel c, c .. c + 7), the dx kernels get beta (in DX_ARGS). */
#ifdef ACT
#define ZF_KARGS , __global const acc_t *stat_w, int is_var, acc_t eps, __global const acc_t *gamma, \
                 __global const acc_t *beta, int fix_gamma
#define ZF_KPASS , stat_w, is_var, eps, gamma, beta, fix_gamma
#define ZF_OF(c)                                                                                          \
    const acc_t za = (fix_gamma ? (acc_t)1 : gamma[c]) * invstd_of(stat_w, (c), is_var, eps), zb = beta[c];
#define ZF8_OF(c, za_, zb_)                                                                              \
    const acc8_t za_ = (fix_gamma ? (acc8_t)1 : vload8(0, gamma + (c))) *                               \
                       (is_var ? (acc_t)1 / sqrt(vload8(0, stat_w + (c)) + eps) : vload8(0, stat_w + (c))), \
                 zb_ = vload8(0, beta + (c));
#define DX_BETA_ARG , __global const acc_t *beta
#define DX_BETA_PASS , beta
#define ZB_ARG , acc_t zb
#define ZB_PASS(e) , (e)
#else
#define ZF_KARGS
#define ZF_KPASS
#define ZF_OF(c)
#define ZF8_OF(c, za_, zb_)
#define DX_BETA_ARG
#define DX_BETA_PASS
#define ZB_ARG
#define ZB_PASS(e)
#endif

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

/* The per-channel factors of dx = a (dy - db) - kx (x - mu) (training) or a dy (inference) for channel c:
 *   training:  dx = gamma invstd (dy - dbeta / m - xhat dgamma / m), xhat = (x - mean) invstd
 *   inference: dx = gamma invstd dy (invstd of the running variance: a constant; x is not read, so an Inf in
 *              x cannot reach dx)
 * (`train`: normalised with the batch statistics; else with the running ones.) With an act, dy is dy act'(z),
 * z = (x - mu) a + beta (x is then read in inference too). */
#define DX_ARGS uint m, __global const acc_t *mean_w, __global const acc_t *stat_w, int is_var, acc_t eps, \
                __global const acc_t *gamma, int fix_gamma, __global acc_t *dbeta, __global acc_t *dgamma_sum, \
                int train DX_BETA_ARG
#define DX_PASS m, mean_w, stat_w, is_var, eps, gamma, fix_gamma, dbeta, dgamma_sum, train DX_BETA_PASS

inline void dx_factors(uint c, DX_ARGS, acc_t *a, acc_t *mu, acc_t *db, acc_t *kx)
{
    const acc_t fm = (acc_t)m, inv = invstd_of(stat_w, c, is_var, eps);
    *a = (fix_gamma ? (acc_t)1 : gamma[c]) * inv;
    *mu = mean_w[c];
    *db = train ? dbeta[c] / fm : (acc_t)0;
    *kx = train ? *a * inv * dgamma_sum[c] / fm : (acc_t)0;
}

#endif /* BN_COMMON_H */

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
 *   NT_STORES    the device's tuning has streaming stores: kernels that write y or dx take `int nt` and, when
 *                the host sets it (large outputs, aligned stores), write past the caches
 *   PREFETCH     the device's tuning has software prefetch: the fused channel-first training kernel, taking
 *                several groups one after the other (`steps`), prefetches the next group's x while it writes y
 * and, per case (none of them: the default, and every macro they touch expands to the code without them):
 *   ACT_RELU, ACT_SIGMOID, ACT_TANH   y = act(z), z the affine output; backward takes dy act'(z) (section
 *                "Activation" below). Such a program has no fused backward kernels: the host runs backward in
 *                stages (partial sums, final, elementwise), each of which recomputes z from x.
 *   KEEP_RUNNING the statistics kernels leave the running statistics alone (training with update_running=0)
 *   NORM_RUNNING the statistics kernels update the running statistics but hand the elementwise kernels the
 *                running statistics as they were before the update (inference with update_running=1: the
 *                host runs the training kernels, which then normalise with those)
 * In place (y over x, dx over dy) takes no define: the host passes one buffer as both arguments. Every kernel
 * that writes y or dx reads each element of x (dy) before it writes that element, in the same work-item, and
 * no kernel reads it after, so the kernels are correct when the two alias (nothing is declared restrict).
 * Every kernel has a fixed work-group size (reqd_work_group_size), so a driver that compiles per launch
 * shape (PoCL) compiles each kernel once. Every other kernel runs one work-item per work-group, and each
 * work-item walks contiguous runs 8 values at a time (vload8 / vstore8, several accumulator chains): on CPU
 * devices that is what vectorises and what amortises the cost of a work-group. The host (choose() in
 * conformance/backends/opencl_plan.py) picks the kernels by shape:
 *   channel-first, a channel fits in cache: fused kernels, one work-item per group of channels, statistics
 *                (4 rows read side by side) then elementwise work in one launch;
 *   channel-first training on large data in rows off the 8-value grid (7x7 maps): the fused kernels that
 *                treat a group of channels as a channel-last tile of positions (second-to-last section);
 *   channel-first, larger: partial -> final -> elementwise (below);
 *   channel-last: the same stages on tiles of channels x rows (last sections), fused when the tiles fit.
 *
 * Reductions run in stages, so that every shape gives the device enough work-groups:
 *   shift    K_c = the mean of the channel's first SHIFT_SAMPLES values (channel-last: first SHIFT_ROWS rows),
 *            an estimate of the mean close enough that sums of x - K_c do not cancel, recomputed where needed;
 *   partial  one partial per (chunk k, channel c), in a single pass over x: S1 = sum (x - K),
 *            S2 = sum (x - K)^2; x - K is exact for offset data (Sterbenz); backward: sum dy and
 *            sum dy (x - mean), by the same functions (sums of u and u v over two tensors);
 *   final    one work-item per channel adds the K partials: mean = K + S1 / m,
 *            var = (S2 - S1^2 / m) / m (the shifted-data form: never E[x^2] - E[x]^2 around 0).
 * A channel holding Inf or NaN gets the textbook values: mean = (plain sum) / m, recomputed for that channel
 * only (so +Inf stays +Inf), and var = NaN, as (x - mean)^2 is then NaN somewhere.
 */

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

/* A fused channel-first kernel keeps each channel's values in a table entry of FUSED_TAB values, vectors first
 * (so each sits on a multiple of 8): e[0..31] the vectors of a sums_t, e[PLAIN..PLAIN + 15] the plain sums'
 * vectors and e[PLAIN + 16], e[PLAIN + 17] their scalars, e[E_SCALARS..+3] the sums_t's scalars, e[E_SHIFT] the
 * shift (or the mean). */
#define FUSED_TAB 56 /* FUSED_TAB in opencl_plan.py; a multiple of 8 */
#define PLAIN 32
#define E_SCALARS 50
#define E_SHIFT 54

inline void sums_load(__local const acc_t *e, sums_t *r)
{
    r->s1 = LV8(e);
    r->c1 = LV8(e + 8);
    r->s2 = LV8(e + 16);
    r->c2 = LV8(e + 24);
    r->t1 = e[E_SCALARS];
    r->u1 = e[E_SCALARS + 1];
    r->t2 = e[E_SCALARS + 2];
    r->u2 = e[E_SCALARS + 3];
}

inline void sums_store(__local acc_t *e, const sums_t *r)
{
    SV8(r->s1, e);
    SV8(r->c1, e + 8);
    SV8(r->s2, e + 16);
    SV8(r->c2, e + 24);
    e[E_SCALARS] = r->t1;
    e[E_SCALARS + 1] = r->u1;
    e[E_SCALARS + 2] = r->t2;
    e[E_SCALARS + 3] = r->u2;
}

#define ITEM_ATTR __attribute__((reqd_work_group_size(1, 1, 1)))
#define APPLY_ATTR __attribute__((reqd_work_group_size(APPLY_LS, 1, 1)))

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

/* The channel-first sums, one family for both passes: over values of two tensors a and b, s1 = sum u and
 * s2 = sum u v, with v = b - K and u = a - ka, ka = K (a_shifted) or 0. The statistics pass a = b = x and the
 * shift: sum (x - K) and sum (x - K)^2 (the same loads twice, which the compiler merges); the backward pass
 * a = dy, b = x and the mean: sum dy and sum dy (x - mean) (dy - 0 is dy, bit for bit).
 * With an act, the backward pass's u is dy act'(z), z = v za + zb (the channel's za, zb: ZF_ARG, passed through
 * every function of the family; the statistics pass hands ZF_NONE and takes no act'). */
#ifdef ACT
#define ZF_ARG , acc_t za, acc_t zb
#define ZF_PASS , za, zb
#define ZF_NONE , (acc_t)0, (acc_t)0
#define SUM_U8(u, v) (a_shifted ? (u) : DACT8(u, v, za, zb))
#define SUM_U1(u, v) (a_shifted ? (u) : DACT1(u, v, za, zb))
#else
#define ZF_ARG
#define ZF_PASS
#define ZF_NONE
#define SUM_U8(u, v) u
#define SUM_U1(u, v) u
#endif

/* The four dependency chains: chain k (k = 0 .. 3) takes the 8 values at k stride + j step, j < n, and the
 * chains' totals are added pairwise to v1 (sum u) and v2 (sum u v). Four chains, so the loop waits on memory,
 * not on the adds. One run: stride 8, step 32; ROW_STREAMS runs side by side: stride the row stride, step 8. */
inline void chains4(__global const data_t *a, __global const data_t *b, int a_shifted, size_t stride, uint step,
                    uint n, acc_t K, acc8_t *v1, acc8_t *v2 ZF_ARG)
{
    const acc_t ka = a_shifted ? K : (acc_t)0;
    const size_t s2x = 2 * stride, s3x = 3 * stride;
    acc8_t a1 = *v1, a2 = *v2, b1 = 0, b2 = 0, c1 = 0, c2 = 0, e1 = 0, e2 = 0;
    for (uint j = 0, t = 0; j < n; ++j, t += step) {
        const acc8_t ua = SUM_U8(LOAD8(a, t) - ka, LOAD8(b, t) - K),
                     ub = SUM_U8(LOAD8(a, stride + t) - ka, LOAD8(b, stride + t) - K);
        const acc8_t uc = SUM_U8(LOAD8(a, s2x + t) - ka, LOAD8(b, s2x + t) - K),
                     ue = SUM_U8(LOAD8(a, s3x + t) - ka, LOAD8(b, s3x + t) - K);
        a1 += ua;
        a2 += ua * (LOAD8(b, t) - K);
        b1 += ub;
        b2 += ub * (LOAD8(b, stride + t) - K);
        c1 += uc;
        c2 += uc * (LOAD8(b, s2x + t) - K);
        e1 += ue;
        e2 += ue * (LOAD8(b, s3x + t) - K);
    }
    *v1 = (a1 + b1) + (c1 + e1);
    *v2 = (a2 + b2) + (c2 + e2);
}

/* The sums of the len values at a, b added to 8-lane sums (v1, v2) and, for the last len % 8 values, scalar
 * ones (t1, t2). */
inline void sums_into(__global const data_t *a, __global const data_t *b, int a_shifted, uint len, acc_t K,
                      acc8_t *v1, acc8_t *v2, acc_t *t1, acc_t *t2 ZF_ARG)
{
    const acc_t ka = a_shifted ? K : (acc_t)0;
    chains4(a, b, a_shifted, 8, 32, len / 32, K, v1, v2 ZF_PASS);
    acc8_t a1 = *v1, a2 = *v2;
    acc_t s1 = *t1, s2 = *t2;
    uint t = len / 32 * 32;
    for (; t + 8 <= len; t += 8) {
        const acc8_t u = SUM_U8(LOAD8(a, t) - ka, LOAD8(b, t) - K);
        a1 += u;
        a2 += u * (LOAD8(b, t) - K);
    }
    for (; t < len; ++t) {
        const acc_t u = SUM_U1(LOAD(a, t) - ka, LOAD(b, t) - K);
        s1 += u;
        s2 += u * (LOAD(b, t) - K);
    }
    *v1 = a1;
    *v2 = a2;
    *t1 = s1;
    *t2 = s2;
}

/* sums_into over ROW_STREAMS runs of len values at once, at a, a + stride, ... (and b alike): one dependency
 * chain per run. A channel-first channel is `outer` runs far apart (a row stride of C inner values); reading
 * one run after the other, the hardware prefetcher starts afresh at every run, while several runs read side by
 * side keep as many streams of loads in flight (the statistics pass of 32x64x56x56 float32 in a
 * micro-benchmark: 0.37 -> 0.29 ms on Intel's runtime, 0.78 -> 0.38 ms on PoCL, from cache). */
#define ROW_STREAMS 4
inline void sums_into_rows(__global const data_t *a, __global const data_t *b, int a_shifted, size_t stride,
                           uint len, acc_t K, acc8_t *v1, acc8_t *v2, acc_t *t1, acc_t *t2 ZF_ARG)
{
    const acc_t ka = a_shifted ? K : (acc_t)0;
    const size_t s2x = 2 * stride, s3x = 3 * stride;
    chains4(a, b, a_shifted, stride, 8, len / 8, K, v1, v2 ZF_PASS);
    acc_t s1 = *t1, s2 = *t2;
    for (uint t = len / 8 * 8; t < len; ++t) {
        const acc_t ua = SUM_U1(LOAD(a, t) - ka, LOAD(b, t) - K),
                    ub = SUM_U1(LOAD(a, stride + t) - ka, LOAD(b, stride + t) - K);
        const acc_t uc = SUM_U1(LOAD(a, s2x + t) - ka, LOAD(b, s2x + t) - K),
                    ue = SUM_U1(LOAD(a, s3x + t) - ka, LOAD(b, s3x + t) - K);
        s1 += (ua + ub) + (uc + ue);
        s2 += (ua * (LOAD(b, t) - K) + ub * (LOAD(b, stride + t) - K)) +
              (uc * (LOAD(b, s2x + t) - K) + ue * (LOAD(b, s3x + t) - K));
    }
    *t1 = s1;
    *t2 = s2;
}

/* sums_into over ns runs (1 or ROW_STREAMS) of len values, stride apart. */
inline void sums_into_ns(__global const data_t *a, __global const data_t *b, int a_shifted, size_t stride, uint ns,
                         uint len, acc_t K, acc8_t *v1, acc8_t *v2, acc_t *t1, acc_t *t2 ZF_ARG)
{
    if (ns == ROW_STREAMS)
        sums_into_rows(a, b, a_shifted, stride, len, K, v1, v2, t1, t2 ZF_PASS);
    else
        sums_into(a, b, a_shifted, len, K, v1, v2, t1, t2 ZF_PASS);
}

/* The sums of ns runs (1 or ROW_STREAMS, stride apart) of len values at a + at, b + at into r, a block of at
 * most SUM_BLOCK values of each run on fresh accumulators at a time. */
inline void run_sums(__global const data_t *a, __global const data_t *b, int a_shifted, size_t at, size_t stride,
                     uint ns, uint len, acc_t K, sums_t *r ZF_ARG)
{
    for (uint t = 0; t < len; t += SUM_BLOCK) {
        acc8_t v1 = 0, v2 = 0;
        acc_t t1 = 0, t2 = 0;
        sums_into_ns(a + at + t, b + at + t, a_shifted, stride, ns, min(len - t, (uint)SUM_BLOCK), K, &v1, &v2, &t1,
                     &t2 ZF_PASS);
        kadd8(&r->s1, &r->c1, v1);
        kadd8(&r->s2, &r->c2, v2);
        kadd(&r->t1, &r->u1, t1);
        kadd(&r->t2, &r->u2, t2);
    }
}

/* The sums of channel c over its elements [j0, j1), run by run (a run: the part of one row in range). */
inline void cf_sums(__global const data_t *a, __global const data_t *b, int a_shifted, uint C, uint inner, uint c,
                    uint j0, uint j1, acc_t K, acc_t *s1, acc_t *s2 ZF_ARG)
{
    sums_t r;
    sums_zero(&r);
    uint o = j0 / inner, i = j0 - o * inner;
    for (uint j = j0; j < j1; ++o, i = 0) {
        const uint len = min(inner - i, j1 - j);
        run_sums(a, b, a_shifted, ((size_t)o * C + c) * inner + i, 0, 1, len, K, &r ZF_PASS);
        j += len;
    }
    *s1 += sums_first(&r);
    *s2 += sums_second(&r);
}

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

/* The per-channel factors of y = (x - mu) a + b for channel c. */
inline void apply_factors(uint c, __global const acc_t *mean_w, __global const acc_t *stat_w, int is_var, acc_t eps,
                          __global const acc_t *gamma, __global const acc_t *beta, int fix_gamma, acc_t *mu,
                          acc_t *a, acc_t *b)
{
    *mu = mean_w[c];
    *a = (fix_gamma ? (acc_t)1 : gamma[c]) * invstd_of(stat_w, c, is_var, eps);
    *b = beta[c];
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

/* y = (x - mean) * invstd * gamma + beta, channel-first. fix_gamma != 0: gamma is taken as 1. mean_w and
 * stat_w are the batch mean and invstd (training, is_var == 0) or the running mean and variance (inference,
 * is_var != 0). Work-item g handles the flat elements [g * seg, min((g + 1) * seg, n)), row by row (a row is
 * the `inner` values of one channel), so short rows (7x7 maps) and long ones get the same work per item. */
#define ROWS_BEGIN                                                                          \
    const size_t f1 = min((size_t)(get_global_id(0) + 1) * seg, (size_t)n);                \
    size_t f = (size_t)get_global_id(0) * seg;                                             \
    const size_t row0 = f / inner; /* the only divisions: later rows are counted */        \
    uint w0 = (uint)(f - row0 * inner), cc = (uint)(row0 % C);                              \
    for (; f < f1; w0 = 0, cc = cc + 1 == C ? 0 : cc + 1) {                                \
        const uint len = (uint)min((size_t)(inner - w0), f1 - f);
#define ROWS_END                                                                            \
        f += len;                                                                          \
    }

/* Streaming, the elementwise kernels walk their segment [f, f1) (f a multiple of 8) in aligned blocks of 8
 * values, whatever the row length, since a streaming store must be aligned: a block across the end of a row
 * (rows of at least 8 values: one end per block at most) takes its first `left` lanes with the factors of the
 * row it started in and the others with the next row's. `left`: values of the current row from f on. */
#if defined(DATA_DOUBLE)
typedef long8 lane8_t;
#else
typedef int8 lane8_t;
#endif
#define FIRST_LANES(k) (((lane8_t)(0, 1, 2, 3, 4, 5, 6, 7)) < (lane8_t)(k))
#define MIX(next, cur, first) select((acc8_t)(next), (acc8_t)(cur), (first))
#define BLOCKS_BEGIN                                                                        \
    const size_t f1 = min((size_t)(get_global_id(0) + 1) * seg, (size_t)n);                \
    size_t f = (size_t)get_global_id(0) * seg;                                             \
    const size_t row0 = f / inner;                                                         \
    uint left = inner - (uint)(f - row0 * inner), cc = (uint)(row0 % C), cn = cc + 1 == C ? 0 : cc + 1;

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

/* Fused kernels: one work-item per group of channels whose values fit in cache, statistics and elementwise
 * work in one launch, so x (and dy) cross the memory bus once.
 * Channel-first: channels [g G, g G + G); row o of the group is one contiguous run of G inner values, and both
 * passes walk the group row by row, the per-channel sums in a local-memory table `tab`. The
 * second pass walks the rows backwards: what the first pass read last is still in cache. Per channel the table
 * keeps vector sums (FUSED_TAB values), so a short row costs no horizontal sum.
 * (The channel-last ones are in the next section.) */

/* Short rows (fewer than SUM_BLOCK values): a run is too short to pay for its own compensated addition, so
 * its sums are added plainly to 2 x 8 lanes and 2 scalars at e + PLAIN, and every SUM_BLOCK / inner rows
 * flush_plain() moves them into the compensated sums. */
inline void run_sums_plain(__global const data_t *a, __global const data_t *b, int a_shifted, size_t at,
                           size_t stride, uint ns, uint len, acc_t K, __local acc_t *p)
{
    acc8_t v1 = LV8(p), v2 = LV8(p + 8);
    acc_t t1 = p[16], t2 = p[17];
    sums_into_ns(a + at, b + at, a_shifted, stride, ns, len, K, &v1, &v2, &t1, &t2 ZF_NONE);
    SV8(v1, p);
    SV8(v2, p + 8);
    p[16] = t1;
    p[17] = t2;
}

/* A work-item of the fused channel-first training kernel takes `steps` groups one after the other; while it
 * writes row o, channel t of a group (the second pass walks backwards), it prefetches row o_, channel t_ of its
 * next group (forwards: the order that group's first pass reads). Not in backward: x and dy of a group fill the
 * cache already (32x64x56x56 float32: 802 KB a channel), and prefetching the next group's made it slower
 * (2.65 -> 2.87 ms PoCL, 2.42 -> 2.75 Intel). AHEAD: that run's offset, 0 for none (at the last
 * step, or for a channel past C; a next group is never at offset 0). */
#define AHEAD(o_, t_)                                                                       \
    (step + 1 < steps && c0 + G + (t_) < C ? ((size_t)(o_) * C + c0 + G + (t_)) * inner : (size_t)0)

inline void flush_plain(__local acc_t *e)
{
    sums_t r;
    sums_load(e, &r);
    kadd8(&r.s1, &r.c1, LV8(e + PLAIN));
    kadd8(&r.s2, &r.c2, LV8(e + PLAIN + 8));
    kadd(&r.t1, &r.u1, e[PLAIN + 16]);
    kadd(&r.t2, &r.u2, e[PLAIN + 17]);
    sums_store(e, &r);
    for (uint k = PLAIN; k < PLAIN + 18; ++k)
        e[k] = 0;
}

/* The first pass of a fused kernel: the sums (as cf_sums: u = a - ka, v = b - K, K the channel's e[E_SHIFT]) of
 * channels c0 .. c0 + g - 1 into their table entries, ROW_STREAMS rows of the group at a time (the last
 * outer % ROW_STREAMS one by one), channel by channel. Short rows' plain sums are flushed before they would hold
 * more than SUM_BLOCK values of one row stream (every step when a step of ROW_STREAMS rows is already more).
 * No act' here (ZF_NONE): an act program uses it for the statistics only (it has no fused backward kernels). */
inline void fused_sums(__global const data_t *a, __global const data_t *b, int a_shifted, uint C, uint inner,
                       uint outer, uint c0, uint g, __local acc_t *tab)
{
    const uint rows = inner >= SUM_BLOCK ? 1 : SUM_BLOCK / inner; /* short rows: rows per flush */
    const size_t stride = (size_t)C * inner;
    uint since = 0; /* rows in the plain sums since the last flush */
    for (uint o = 0, ns; o < outer; o += ns) {
        ns = outer - o >= ROW_STREAMS ? ROW_STREAMS : 1;
        for (uint t = 0; t < g; ++t) {
            __local acc_t *e = tab + t * FUSED_TAB;
            const size_t at = ((size_t)o * C + c0 + t) * inner; /* the channel's run in the first of the ns rows */
            if (inner < SUM_BLOCK) {
                run_sums_plain(a, b, a_shifted, at, stride, ns, inner, e[E_SHIFT], e + PLAIN);
            } else {
                sums_t r;
                sums_load(e, &r);
                run_sums(a, b, a_shifted, at, stride, ns, inner, e[E_SHIFT], &r ZF_NONE);
                sums_store(e, &r);
            }
        }
        since += ns;
        if (inner < SUM_BLOCK && (since + ROW_STREAMS > rows || o + ns == outer)) {
            for (uint t = 0; t < g; ++t)
                flush_plain(tab + t * FUSED_TAB);
            since = 0;
        }
    }
}

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

/* ---- Channel-last (inner == 1): tiles ---------------------------------------------------------------------
 * Work-item (j, k) covers the tile of channels [j W, min(j W + W, C)) over rows [k chunk, min(k chunk + chunk,
 * outer)); each row of a tile is one contiguous run of w values, walked 8 at a time. The tile's per-channel
 * values (shift or mean, two sums and their two compensations; later the factors) live in a local-memory
 * table `tab` of 5 arrays of Wp = W rounded up to a multiple of 8 values (TILE_TAB in opencl_plan.py; work-groups of one work-item: the table is that
 * work-item's scratch). A fused kernel takes every row of its tile. */

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

/* *s += v (8 channels of a table) with the rounding error kept in *c, and its scalar twin. */
inline void ladd8(__local acc_t *s, __local acc_t *c, acc8_t v)
{
    acc8_t a = LV8(s), k = LV8(c);
    kadd8(&a, &k, v);
    SV8(a, s);
    SV8(k, c);
}

inline void ladd(__local acc_t *s, __local acc_t *c, acc_t v)
{
    acc_t a = *s, k = *c;
    kadd(&a, &k, v);
    *s = a;
    *c = k;
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

/* tile_sums and tile_bwd_sums walking TILE_ROWS rows side by side across the whole tile width, for tiles whose
 * rows are far apart (a group of 7x7 channels: rows C inner values apart): every row is then one sequential
 * stream of loads, where the register slabs walk down a column of rows 128 bytes at a time and leave the
 * prefetcher nothing to follow. Per position of the tile, s1 = sum u and s2 = sum u v, with v = b - k and u = a - k
 * (a_shifted) or u = a: the statistics pass a = b = x and the shift (the same loads twice, which the compiler
 * merges), the backward pass a = dy, b = x and the mean. Each step's TILE_ROWS values of a position are added
 * pairwise and join its sums with compensation. */
#define TILE_ROWS 8
#define ROWS8(p, s, OP) OP(p, 0), OP(p, s), OP(p, 2 * s), OP(p, 3 * s), OP(p, 4 * s), OP(p, 5 * s), OP(p, 6 * s), OP(p, 7 * s)
#define TREE8(f) (((f(0) + f(1)) + (f(2) + f(3))) + ((f(4) + f(5)) + (f(6) + f(7))))
#define U(j) u[j]
#define UV(j) u[j] * v[j]
inline void tile_sums_rows(__global const data_t *a, __global const data_t *b, int a_shifted, uint C, uint c0,
                           uint w, uint r0, uint r1, __local const acc_t *k, __local acc_t *s1, __local acc_t *s2,
                           __local acc_t *q1, __local acc_t *q2)
{
    for (uint t = 0; t < w; ++t)
        s1[t] = s2[t] = q1[t] = q2[t] = 0;
    const size_t S = C;
    uint r = r0;
    for (; r + TILE_ROWS <= r1; r += TILE_ROWS) {
        const size_t at = (size_t)r * C + c0;
        __global const data_t *pa = a + at, *pb = b + at;
        uint t = 0;
        for (; t + 8 <= w; t += 8) {
            const acc8_t k8 = LV8(k + t), ka = a_shifted ? k8 : (acc8_t)0;
#define A8(p, i) LOAD8(p, (i) + t) - ka
#define B8(p, i) LOAD8(p, (i) + t) - k8
            const acc8_t u[8] = {ROWS8(pa, S, A8)}, v[8] = {ROWS8(pb, S, B8)};
            ladd8(s1 + t, q1 + t, TREE8(U));
            ladd8(s2 + t, q2 + t, TREE8(UV));
        }
        for (; t < w; ++t) {
            const acc_t k1 = k[t], ka = a_shifted ? k1 : (acc_t)0;
#define A1(p, i) LOAD(p, (i) + t) - ka
#define B1(p, i) LOAD(p, (i) + t) - k1
            const acc_t u[8] = {ROWS8(pa, S, A1)}, v[8] = {ROWS8(pb, S, B1)};
            ladd(s1 + t, q1 + t, TREE8(U));
            ladd(s2 + t, q2 + t, TREE8(UV));
        }
    }
    for (; r < r1; ++r) { /* the last rows % TILE_ROWS, one by one */
        const size_t at = (size_t)r * C + c0;
        __global const data_t *pa = a + at, *pb = b + at;
        uint t = 0;
        for (; t + 8 <= w; t += 8) {
            const acc8_t k8 = LV8(k + t), ka = a_shifted ? k8 : (acc8_t)0;
            const acc8_t u = A8(pa, 0), v = B8(pb, 0);
            ladd8(s1 + t, q1 + t, u);
            ladd8(s2 + t, q2 + t, u * v);
        }
        for (; t < w; ++t) {
            const acc_t k1 = k[t], ka = a_shifted ? k1 : (acc_t)0;
            const acc_t u = A1(pa, 0), v = B1(pb, 0);
            ladd(s1 + t, q1 + t, u);
            ladd(s2 + t, q2 + t, u * v);
        }
    }
#undef A8
#undef B8
#undef A1
#undef B1
    for (uint t = 0; t < w; ++t) {
        s1[t] = comp(s1[t], q1[t]);
        s2[t] = comp(s2[t], q2[t]);
    }
}
#undef U
#undef UV

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

/* A tile's channels [c0, c0 + w) and its chunk k of rows [r0, r1). The elementwise passes that follow a pass of
   partial sums take the chunks in reverse (TILE_LAST_FIRST): they begin with the rows the sums read last, those
   most likely still in the cache (with tile_sums' prefetch, 32x64x56x56 float32 NHWC training against both
   without, two runs of 12 interleaved rounds: PoCL 0 and -4 %, Intel -3 and -3 %; little, as this host's shared
   L3 keeps little of one pass for the next). bn_apply_cl serves inference too, with no pass before it: there the
   order makes no difference. */
#define TILE_CHUNK get_global_id(1)
#define TILE_LAST_FIRST (get_global_size(1) - 1 - get_global_id(1))
#define TILE_BEGIN(rows, k)                                                                \
    const uint c0 = get_global_id(0) * W, w = min(W, C - c0), Wp = (W + 7) & ~7u;           \
    const uint r0 = (uint)(k) * chunk, r1 = min(r0 + chunk, (uint)(rows));

/* The tile's two sums (tab at Wp and 2 Wp) into part[(k * C + c) * 2 + {0, 1}], k = the tile's chunk of rows. */
inline void store_partials(__global acc_t *part, uint C, uint c0, uint w, uint W, __local const acc_t *tab)
{
    __global acc_t *q = part + ((size_t)get_global_id(1) * C + c0) * 2;
    for (uint t = 0; t < w; ++t) {
        q[2 * t] = tab[W + t];
        q[2 * t + 1] = tab[2 * W + t];
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

/* ---- Channel-first, short rows, as tiles ------------------------------------------------------------------
 * A group of g channels of short rows (7x7 maps: 49 values) is, row by row, one contiguous run of P = g inner
 * values: the same shape as a channel-last tile of P "positions" over rows C inner values apart. So the tile
 * helpers do the work: per-position sums, TILE_ROWS rows side by side (tile_sums_rows; every position's shift
 * the shift of its channel), added per channel at the end; then the per-position factors (each its channel's)
 * for one flat elementwise pass per row, which can stream its stores. A run of a channel costs no call of its own, so
 * 49-value runs cost what long ones do. One work-item per group; the table holds TILE_TAB arrays of Pp = P
 * rounded up to a multiple of 8 values. */

/* Each position of the group gets its channel's value v(t), t = 0 .. g - 1: tab[t inner + i] = v(t). */
#define SPREAD(tab, g, inner, expr)                                                        \
    for (uint t = 0; t < (g); ++t) {                                                       \
        const acc_t v_ = (expr);                                                           \
        for (uint i = 0; i < (inner); ++i)                                                 \
            (tab)[t * (inner) + i] = v_;                                                   \
    }

/* The sum of channel t's positions in s. */
inline acc_t channel_total(__local const acc_t *s, uint t, uint inner)
{
    acc_t v = 0;
    for (uint i = 0; i < inner; ++i)
        v += s[t * inner + i];
    return v;
}

#define CFT_BEGIN                                                                           \
    __local acc_t *tab = (__local acc_t *)tab8;                                            \
    const uint c0 = get_global_id(0) * G, g = min(G, C - c0), P = g * inner;               \
    const uint Pp = (G * inner + 7) & ~7u, row = C * inner, p0 = c0 * inner;

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

/* BatchNorm forward and backward, OpenCL C 1.2.
 *
 * The data x (and dy, y, dx) are viewed as [outer, C, inner], C-contiguous: element j (0 <= j < m, with
 * m = outer * inner) of channel c lies at flat index (j / inner) * C * inner + c * inner + (j % inner), and the
 * channel of flat index i is (i / inner) % C.
 *
 * Build-time defines (one program per data type):
 *   DATA_HALF    x, y, dy, dx are float16, loaded with vload_half and stored with vstore_half_rte;
 *                arithmetic and all per-channel buffers (gamma, beta, statistics) are float.
 *   DATA_DOUBLE  everything is double (needs cl_khr_fp64).
 *   (neither)    everything is float.
 *   LOCAL_SIZE   the work-group size every kernel is launched with: a power of two (default 256).
 *
 * Kernels (launch: global size a multiple of LOCAL_SIZE, local size LOCAL_SIZE):
 *   bn_stats       one work-group per channel: batch mean and variance, running-stat update, extra output
 *   bn_infer_prep  one work-item per channel: invstd from the running variance
 *   bn_apply       one work-item per element: y = (x - mean) * invstd * gamma + beta
 *   bn_bwd_reduce  one work-group per channel: dbeta = sum dy, dgamma = sum dy * xhat
 *   bn_bwd_apply   one work-item per element: dx
 *
 * Sums are plain sums (per work-item partial sums, then a tree in local memory), so NaN and Inf propagate
 * exactly as the textbook formulas make them. The variance is the corrected two-pass one:
 *   centre = sum x / m;  d = x - centre;  var = (sum d^2 - (sum d)^2 / m) / m
 * never E[x^2] - E[x]^2. The same correction refines the mean: shift = (sum d) / m is what the rounded centre
 * misses, the reported mean is centre + shift, and the elementwise kernels use (x - centre) - shift, so that
 * on offset data (x = 1e4 + 0.1 * noise) x - mean keeps its precision instead of inheriting the rounding error
 * of a float mean (up to half an ulp of 1e4, 5e-4: half a percent of the noise).
 * Per-channel work buffers shared by the kernels: centre, shift, invstd (infer: running mean, 0, invstd).
 */

#ifndef LOCAL_SIZE
#define LOCAL_SIZE 256
#endif

#if defined(DATA_DOUBLE)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t;
typedef double data_t;
#define LOAD(p, i) ((p)[(i)])
#define STORE(v, p, i) ((p)[(i)] = (v))
#elif defined(DATA_HALF)
typedef float acc_t;
typedef half data_t; /* storage only: a half pointer needs no extension with vload_half/vstore_half */
#define LOAD(p, i) vload_half((i), (p))
#define STORE(v, p, i) vstore_half_rte((v), (i), (p))
#else
typedef float acc_t;
typedef float data_t;
#define LOAD(p, i) ((p)[(i)])
#define STORE(v, p, i) ((p)[(i)] = (v))
#endif

#define WG_ATTR __attribute__((reqd_work_group_size(LOCAL_SIZE, 1, 1)))

/* Flat index of element j of channel c. */
inline uint elem_index(uint j, uint c, uint C, uint inner)
{
    uint o = j / inner;
    return (o * C + c) * inner + (j - o * inner);
}

/* Sum of v over the work-group; every work-item gets the result. buf holds LOCAL_SIZE values. */
inline acc_t group_sum(__local acc_t *buf, acc_t v)
{
    uint lid = get_local_id(0);
    buf[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = LOCAL_SIZE / 2; s > 0; s >>= 1) {
        if (lid < s)
            buf[lid] += buf[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    acc_t r = buf[0];
    barrier(CLK_LOCAL_MEM_FENCE); /* buf may be reused at once */
    return r;
}

/* Two sums at once (one tree, two buffers). */
inline void group_sum2(__local acc_t *buf_a, __local acc_t *buf_b, acc_t *a, acc_t *b)
{
    uint lid = get_local_id(0);
    buf_a[lid] = *a;
    buf_b[lid] = *b;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = LOCAL_SIZE / 2; s > 0; s >>= 1) {
        if (lid < s) {
            buf_a[lid] += buf_a[lid + s];
            buf_b[lid] += buf_b[lid + s];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    *a = buf_a[0];
    *b = buf_b[0];
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Training statistics of channel get_group_id(0).
 *   momentum        the framework-style momentum parameter p:
 *                     momentum_new == 0: running = p * running + (1 - p) * batch   (p weighs the old value)
 *                     momentum_new != 0: running = (1 - p) * running + p * batch   (p weighs the new value)
 *   unbiased        != 0: the running variance is updated with var * m / (m - 1) (normalisation always uses
 *                   the biased var)
 *   want_invstd     != 0: stat_out gets invstd, else the biased batch variance
 * Outputs: mean_out, stat_out, the work buffers centre_out, shift_out, invstd_out (used by bn_apply and the
 * backward kernels), and the running statistics, updated in place.
 */
__kernel WG_ATTR void bn_stats(__global const data_t *x, uint C, uint inner, uint m,
                               acc_t eps, acc_t momentum, int momentum_new, int unbiased, int want_invstd,
                               __global acc_t *running_mean, __global acc_t *running_var,
                               __global acc_t *mean_out, __global acc_t *stat_out, __global acc_t *centre_out,
                               __global acc_t *shift_out, __global acc_t *invstd_out)
{
    __local acc_t buf_a[LOCAL_SIZE];
    __local acc_t buf_b[LOCAL_SIZE];
    const uint c = get_group_id(0);
    const uint lid = get_local_id(0);
    const acc_t fm = (acc_t)m;

    /* pass 1: mean */
    acc_t s = 0;
    for (uint j = lid; j < m; j += LOCAL_SIZE)
        s += LOAD(x, elem_index(j, c, C, inner));
    const acc_t centre = group_sum(buf_a, s) / fm;

    /* pass 2: sum of deviations (the correction) and of squared deviations */
    acc_t s1 = 0, s2 = 0;
    for (uint j = lid; j < m; j += LOCAL_SIZE) {
        acc_t d = LOAD(x, elem_index(j, c, C, inner)) - centre;
        s1 += d;
        s2 += d * d;
    }
    group_sum2(buf_a, buf_b, &s1, &s2);

    if (lid == 0) {
        const acc_t shift_raw = s1 / fm;  /* what the rounded centre misses of the mean */
        const acc_t corr = shift_raw * s1; /* (sum d)^2 / m, without the overflow of s1 * s1 */
        /* Inf or NaN in x, or d^2 overflowing, make s2 or corr non-finite: then the plain formulas hold,
         * var = sum d^2 / m and mean = sum x / m (so a channel holding +Inf gets mean +Inf, not Inf - Inf,
         * and one whose sum d^2 overflows gets var +Inf, not Inf - Inf). */
        acc_t var = (isfinite(s2) && isfinite(corr)) ? (s2 - corr) / fm : s2 / fm;
        if (var < (acc_t)0) /* rounding only (Cauchy-Schwarz); written so that NaN stays NaN */
            var = (acc_t)0;
        const acc_t invstd = (acc_t)1 / sqrt(var + eps);
        const acc_t shift = isfinite(shift_raw) ? shift_raw : (acc_t)0;
        const acc_t mean = centre + shift;
        mean_out[c] = mean;
        centre_out[c] = centre;
        shift_out[c] = shift;
        stat_out[c] = want_invstd ? invstd : var;
        invstd_out[c] = invstd;

        const acc_t w_old = momentum_new ? (acc_t)1 - momentum : momentum;
        const acc_t w_new = momentum_new ? momentum : (acc_t)1 - momentum;
        const acc_t var_run = unbiased ? var * fm / (acc_t)(m - 1) : var; /* m = 1: 0/0 = NaN, as the formula */
        running_mean[c] = w_old * running_mean[c] + w_new * mean;
        running_var[c] = w_old * running_var[c] + w_new * var_run;
    }
}

/* Inference: the work buffers from the running statistics, one work-item per channel. */
__kernel WG_ATTR void bn_infer_prep(__global const acc_t *running_mean, __global const acc_t *running_var,
                                    acc_t eps, uint C, __global acc_t *centre_out, __global acc_t *shift_out,
                                    __global acc_t *invstd_out)
{
    const uint c = get_global_id(0);
    if (c < C) {
        centre_out[c] = running_mean[c];
        shift_out[c] = (acc_t)0;
        invstd_out[c] = (acc_t)1 / sqrt(running_var[c] + eps);
    }
}

/* y = (x - mean) * invstd * gamma + beta, one work-item per element, with x - mean = (x - centre) - shift.
 * fix_gamma != 0: gamma is taken as 1. */
__kernel WG_ATTR void bn_apply(__global const data_t *x, __global data_t *y, uint n, uint C, uint inner,
                               __global const acc_t *centre, __global const acc_t *shift,
                               __global const acc_t *invstd,
                               __global const acc_t *gamma, __global const acc_t *beta, int fix_gamma)
{
    const uint i = get_global_id(0);
    if (i >= n)
        return;
    const uint c = (i / inner) % C;
    const acc_t g = fix_gamma ? (acc_t)1 : gamma[c];
    const acc_t xhat = ((LOAD(x, i) - centre[c]) - shift[c]) * invstd[c];
    STORE(xhat * g + beta[c], y, i);
}

/* Backward reduction of channel get_group_id(0): dbeta = sum dy, dgamma = sum dy * xhat, where
 * xhat = ((x - centre) - shift) * invstd.
 * dgamma_sum_out always gets the sum (bn_bwd_apply needs it); dgamma_out gets 0 when fix_gamma != 0. */
__kernel WG_ATTR void bn_bwd_reduce(__global const data_t *x, __global const data_t *dy, uint C, uint inner,
                                    uint m, __global const acc_t *centre, __global const acc_t *shift,
                                    __global const acc_t *invstd, int fix_gamma, __global acc_t *dbeta_out, __global acc_t *dgamma_sum_out,
                                    __global acc_t *dgamma_out)
{
    __local acc_t buf_a[LOCAL_SIZE];
    __local acc_t buf_b[LOCAL_SIZE];
    const uint c = get_group_id(0);
    const uint lid = get_local_id(0);
    const acc_t ctr = centre[c];
    const acc_t sh = shift[c];
    const acc_t inv = invstd[c];

    acc_t s_dy = 0, s_dyx = 0;
    for (uint j = lid; j < m; j += LOCAL_SIZE) {
        const uint i = elem_index(j, c, C, inner);
        const acc_t g = LOAD(dy, i);
        s_dy += g;
        s_dyx += g * (((LOAD(x, i) - ctr) - sh) * inv);
    }
    group_sum2(buf_a, buf_b, &s_dy, &s_dyx);

    if (lid == 0) {
        dbeta_out[c] = s_dy;
        dgamma_sum_out[c] = s_dyx;
        dgamma_out[c] = fix_gamma ? (acc_t)0 : s_dyx;
    }
}

/* dx, one work-item per element.
 *   train != 0: dx = gamma * invstd * (dy - dbeta / m - xhat * dgamma / m), xhat = ((x - centre) - shift) * invstd
 *   train == 0: dx = gamma * invstd * dy   (invstd from the running variance: a constant)
 */
__kernel WG_ATTR void bn_bwd_apply(__global const data_t *x, __global const data_t *dy, __global data_t *dx,
                                   uint n, uint C, uint inner, uint m,
                                   __global const acc_t *centre, __global const acc_t *shift,
                                   __global const acc_t *invstd, __global const acc_t *gamma, int fix_gamma,
                                   __global const acc_t *dbeta, __global const acc_t *dgamma_sum, int train)
{
    const uint i = get_global_id(0);
    if (i >= n)
        return;
    const uint c = (i / inner) % C;
    const acc_t inv = invstd[c];
    const acc_t scale = (fix_gamma ? (acc_t)1 : gamma[c]) * inv;
    const acc_t g = LOAD(dy, i);
    acc_t r;
    if (train) {
        const acc_t fm = (acc_t)m;
        const acc_t xhat = ((LOAD(x, i) - centre[c]) - shift[c]) * inv;
        r = scale * (g - dbeta[c] / fm - xhat * dgamma_sum[c] / fm);
    } else {
        r = scale * g;
    }
    STORE(r, dx, i);
}

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
 *   REDUCE_LS    work-group size of the reduction kernels (a power of two, default 256)
 *   APPLY_LS     work-group size (dimension 0) of the elementwise and channel-last kernels (default 64)
 * Every kernel has a fixed work-group size (reqd_work_group_size), so a driver that compiles per launch
 * shape (PoCL) compiles each kernel once.
 *
 * Reductions run in stages, so that every shape gives the device enough work-groups:
 *   shift    one work-item per channel: K_c = the mean of the channel's first SHIFT_SAMPLES values, an
 *            estimate of the mean close enough that sums of x - K_c do not cancel (|K - mean| ~ sigma / 8);
 *   partial  one partial per (chunk k, channel c), in a single pass over x: S1 = sum (x - K),
 *            S2 = sum (x - K)^2 and the plain sum P; x - K is exact for offset data (Sterbenz);
 *   final    one work-item per channel adds the K partials: mean = K + S1 / m,
 *            var = (S2 - S1^2 / m) / m (the shifted-data form: never E[x^2] - E[x]^2 around 0).
 * A channel holding Inf or NaN gets the textbook values: mean = P / m (so +Inf stays +Inf) and var = NaN,
 * as (x - mean)^2 is then NaN somewhere.
 */

#ifndef REDUCE_LS
#define REDUCE_LS 256
#endif
#ifndef APPLY_LS
#define APPLY_LS 64
#endif
#define SHIFT_SAMPLES 64

#if defined(DATA_DOUBLE)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t;
typedef double data_t;
#define LOAD(p, i) ((p)[(i)])
#define STORE(v, p, i) ((p)[(i)] = (v))
#elif defined(DATA_HALF)
typedef float acc_t;
typedef half data_t; /* storage only: vload_half/vstore_half need no extension */
#define LOAD(p, i) vload_half((i), (p))
#define STORE(v, p, i) vstore_half_rte((v), (i), (p))
#else
typedef float acc_t;
typedef float data_t;
#define LOAD(p, i) ((p)[(i)])
#define STORE(v, p, i) ((p)[(i)] = (v))
#endif

#define REDUCE_ATTR __attribute__((reqd_work_group_size(REDUCE_LS, 1, 1)))
#define APPLY_ATTR __attribute__((reqd_work_group_size(APPLY_LS, 1, 1)))

/* Sum over the work-group; every work-item gets the result. */
inline acc_t group_sum(__local acc_t *buf, acc_t v)
{
    const uint lid = get_local_id(0);
    buf[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = REDUCE_LS / 2; s > 0; s >>= 1) {
        if (lid < s)
            buf[lid] += buf[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const acc_t r = buf[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* Element j of channel c, walked with a step of REDUCE_LS without a division per element:
 * (o, i) = divmod(j, inner), advanced by (step_o, step_i) = divmod(REDUCE_LS, inner). */
#define WALK_BEGIN(j0)                                                                     \
    uint o_ = (j0) / inner, i_ = (j0) - o_ * inner;                                        \
    const uint so_ = REDUCE_LS / inner, si_ = REDUCE_LS - so_ * inner;                     \
    for (uint j_ = (j0); j_ < end; j_ += REDUCE_LS) {                                      \
        const uint at_ = (o_ * C + c) * inner + i_;
#define WALK_END                                                                           \
        o_ += so_;                                                                         \
        i_ += si_;                                                                         \
        if (i_ >= inner) {                                                                 \
            i_ -= inner;                                                                   \
            o_ += 1;                                                                       \
        }                                                                                  \
    }

/* Shift: shift[c] = mean of the first min(m, SHIFT_SAMPLES) values of channel c (one work-item per channel). */
__kernel APPLY_ATTR void bn_shift(__global const data_t *x, uint C, uint inner, uint m, __global acc_t *shift)
{
    const uint c = get_global_id(0);
    if (c >= C)
        return;
    const uint cnt = min(m, (uint)SHIFT_SAMPLES);
    acc_t s = 0;
    for (uint j = 0; j < cnt; ++j) {
        const uint o = j / inner;
        s += LOAD(x, ((size_t)o * C + c) * inner + (j - o * inner));
    }
    shift[c] = s / (acc_t)cnt;
}

/* Partial, channel-first: work-group (k, c) = (get_group_id(0), get_group_id(1)) covers elements
 * [k * chunk, min((k + 1) * chunk, m)) of channel c. part[(k * C + c) * 3 + {0,1,2}] = S1, S2, P. */
__kernel REDUCE_ATTR void bn_stats_partial_cf(__global const data_t *x, uint C, uint inner, uint m, uint chunk,
                                              __global const acc_t *shift, __global acc_t *part)
{
    __local acc_t buf[REDUCE_LS];
    const uint k = get_group_id(0), c = get_group_id(1), lid = get_local_id(0);
    const uint start = k * chunk;
    const uint end = min(start + chunk, m);
    const acc_t K = shift[c];
    acc_t s1 = 0, s2 = 0, p = 0;
    {
        WALK_BEGIN(start + lid)
        const acc_t v = LOAD(x, at_);
        const acc_t d = v - K;
        s1 += d;
        s2 += d * d;
        p += v;
        WALK_END
    }
    s1 = group_sum(buf, s1);
    s2 = group_sum(buf, s2);
    p = group_sum(buf, p);
    if (lid == 0) {
        __global acc_t *q = part + ((size_t)k * C + c) * 3;
        q[0] = s1;
        q[1] = s2;
        q[2] = p;
    }
}

/* Partial, channel-last: work-item c of group (g, k) covers rows [k * chunk, min((k + 1) * chunk, outer)). */
__kernel APPLY_ATTR void bn_stats_partial_cl(__global const data_t *x, uint C, uint outer, uint chunk,
                                             __global const acc_t *shift, __global acc_t *part)
{
    const uint c = get_global_id(0), k = get_global_id(1);
    if (c >= C)
        return;
    const uint r0 = k * chunk, r1 = min(r0 + chunk, outer);
    const acc_t K = shift[c];
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

/* Final, one work-item per channel: add the K partials; write the batch statistics, update the running
 * statistics and fill the work buffers mean_w / invstd_w used by the elementwise and backward kernels.
 *   momentum        the framework-style parameter p: momentum_new == 0: running = p running + (1 - p) batch,
 *                   momentum_new != 0: running = (1 - p) running + p batch
 *   unbiased        != 0: the running variance moves towards var * m / (m - 1)
 *   want_invstd     != 0: stat_out gets invstd, else the biased batch variance */
__kernel APPLY_ATTR void bn_stats_final(__global const acc_t *part, __global const acc_t *shift, uint C, uint K,
                                        uint m, acc_t eps, acc_t momentum, int momentum_new, int unbiased,
                                        int want_invstd, __global acc_t *running_mean, __global acc_t *running_var,
                                        __global acc_t *mean_out, __global acc_t *stat_out,
                                        __global acc_t *mean_w, __global acc_t *invstd_w)
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
    const acc_t fm = (acc_t)m;
    const acc_t d = s1 / fm; /* mean - shift */
    acc_t mean = shift[c] + d;
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

/* Inference: the work buffers from the running statistics, one work-item per channel. */
__kernel APPLY_ATTR void bn_infer_prep(__global const acc_t *running_mean, __global const acc_t *running_var,
                                       acc_t eps, uint C, __global acc_t *mean_w, __global acc_t *invstd_w)
{
    const uint c = get_global_id(0);
    if (c < C) {
        mean_w[c] = running_mean[c];
        invstd_w[c] = (acc_t)1 / sqrt(running_var[c] + eps);
    }
}

/* The channel of the element at (get_global_id(0), row get_global_id(1)) of a [rows, width] launch:
 * channel-first: width = inner, row = o * C + c; channel-last: width = C, row = o. */
#define CHANNEL(chan_last, C) ((chan_last) ? (uint)get_global_id(0) : (uint)(get_global_id(1) % (C)))

/* y = (x - mean) * invstd * gamma + beta over a 2D launch (width padded to APPLY_LS, rows). */
__kernel APPLY_ATTR void bn_apply(__global const data_t *x, __global data_t *y, uint width, uint C, int chan_last,
                                  __global const acc_t *mean_w, __global const acc_t *invstd_w,
                                  __global const acc_t *gamma, __global const acc_t *beta, int fix_gamma)
{
    const uint w = get_global_id(0);
    if (w >= width)
        return;
    const uint c = CHANNEL(chan_last, C);
    const size_t at = (size_t)get_global_id(1) * width + w;
    const acc_t a = (fix_gamma ? (acc_t)1 : gamma[c]) * invstd_w[c];
    STORE((LOAD(x, at) - mean_w[c]) * a + beta[c], y, at);
}

/* Backward stage 1, channel-first: part[(k * C + c) * 2 + {0, 1}] = sum dy, sum dy * (x - mean) over the chunk. */
__kernel REDUCE_ATTR void bn_bwd_partial_cf(__global const data_t *x, __global const data_t *dy, uint C, uint inner,
                                            uint m, uint chunk, __global const acc_t *mean_w,
                                            __global acc_t *part)
{
    __local acc_t buf[REDUCE_LS];
    const uint k = get_group_id(0), c = get_group_id(1), lid = get_local_id(0);
    const uint start = k * chunk;
    const uint end = min(start + chunk, m);
    const acc_t mu = mean_w[c];
    acc_t s_dy = 0, s_dyx = 0;
    {
        WALK_BEGIN(start + lid)
        const acc_t g = LOAD(dy, at_);
        s_dy += g;
        s_dyx += g * (LOAD(x, at_) - mu);
        WALK_END
    }
    s_dy = group_sum(buf, s_dy);
    s_dyx = group_sum(buf, s_dyx);
    if (lid == 0) {
        part[((size_t)k * C + c) * 2] = s_dy;
        part[((size_t)k * C + c) * 2 + 1] = s_dyx;
    }
}

/* Backward stage 1, channel-last. */
__kernel APPLY_ATTR void bn_bwd_partial_cl(__global const data_t *x, __global const data_t *dy, uint C, uint outer,
                                           uint chunk, __global const acc_t *mean_w, __global acc_t *part)
{
    const uint c = get_global_id(0), k = get_global_id(1);
    if (c >= C)
        return;
    const uint r0 = k * chunk, r1 = min(r0 + chunk, outer);
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

/* Backward stage 2, one work-item per channel: dbeta = sum dy, dgamma = invstd * sum dy (x - mean).
 * dgamma_sum keeps the sum for bn_bwd_apply; dgamma_out gets 0 when fix_gamma != 0. */
__kernel APPLY_ATTR void bn_bwd_final(__global const acc_t *part, uint C, uint K, __global const acc_t *invstd_w,
                                      int fix_gamma, __global acc_t *dbeta_out, __global acc_t *dgamma_sum,
                                      __global acc_t *dgamma_out)
{
    const uint c = get_global_id(0);
    if (c >= C)
        return;
    acc_t s_dy = 0, s_dyx = 0;
    for (uint k = 0; k < K; ++k) {
        s_dy += part[((size_t)k * C + c) * 2];
        s_dyx += part[((size_t)k * C + c) * 2 + 1];
    }
    const acc_t dg = s_dyx * invstd_w[c];
    dbeta_out[c] = s_dy;
    dgamma_sum[c] = dg;
    dgamma_out[c] = fix_gamma ? (acc_t)0 : dg;
}

/* dx over a 2D launch like bn_apply.
 *   train != 0: dx = gamma invstd (dy - dbeta / m - xhat dgamma / m), xhat = (x - mean) invstd
 *   train == 0: dx = gamma invstd dy   (invstd of the running variance: a constant) */
__kernel APPLY_ATTR void bn_bwd_apply(__global const data_t *x, __global const data_t *dy, __global data_t *dx,
                                      uint width, uint C, int chan_last, uint m,
                                      __global const acc_t *mean_w, __global const acc_t *invstd_w,
                                      __global const acc_t *gamma, int fix_gamma,
                                      __global const acc_t *dbeta, __global const acc_t *dgamma_sum, int train)
{
    const uint w = get_global_id(0);
    if (w >= width)
        return;
    const uint c = CHANNEL(chan_last, C);
    const size_t at = (size_t)get_global_id(1) * width + w;
    const acc_t inv = invstd_w[c];
    const acc_t a = (fix_gamma ? (acc_t)1 : gamma[c]) * inv;
    const acc_t g = LOAD(dy, at);
    acc_t r;
    if (train) {
        const acc_t fm = (acc_t)m;
        const acc_t xhat = (LOAD(x, at) - mean_w[c]) * inv;
        r = a * (g - dbeta[c] / fm - xhat * dgamma_sum[c] / fm);
    } else {
        r = a * g;
    }
    STORE(r, dx, at);
}

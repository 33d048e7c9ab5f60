/* Memory-copy roofline: dst = src. Work-item g copies floats [g * seg, min((g + 1) * seg, n)), eight at a
 * time, like the BatchNorm kernels walk their data. */
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void copy_seg(__global const float *src, __global float *dst, ulong n, uint seg)
{
    const size_t f0 = (size_t)get_global_id(0) * seg;
    const size_t f1 = min(f0 + seg, (size_t)n);
    size_t f = f0;
    for (; f + 8 <= f1; f += 8)
        vstore8(vload8(0, src + f), 0, dst + f);
    for (; f < f1; ++f)
        dst[f] = src[f];
}

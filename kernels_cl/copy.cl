/* Memory-copy roofline: dst = src. Work-item g copies floats [g * seg, min((g + 1) * seg, n)), eight at a
 * time, like the BatchNorm kernels walk their data: copy_seg with plain stores, copy_seg_nt (built with
 * NT_STORES) with the streaming stores the BatchNorm kernels use for large outputs, so the roofline is the
 * best copy either kind of store gives. */
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

#ifdef NT_STORES
/* seg a multiple of 8 and dst 32-byte aligned: every 8-value store is aligned, as the instruction demands. */
__kernel __attribute__((reqd_work_group_size(1, 1, 1)))
void copy_seg_nt(__global const float *src, __global float *dst, ulong n, uint seg)
{
    const size_t f0 = (size_t)get_global_id(0) * seg;
    const size_t f1 = min(f0 + seg, (size_t)n);
    size_t f = f0;
    for (; f + 8 <= f1; f += 8)
        __builtin_nontemporal_store(vload8(0, src + f), (__global float8 *)(dst + f));
    for (; f < f1; ++f)
        dst[f] = src[f];
}
#endif

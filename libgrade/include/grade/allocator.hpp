#pragma once
// Process-wide memory-allocator settings for applications that grade many tiles (optional; the tools call it).

namespace grade {

// Keeps freed tile-sized buffers in the process instead of handing them back to the kernel (glibc malloc only; a
// no-op returning false elsewhere). Each tile allocates tens of megabytes of short-lived maps (network outputs,
// labels, stain densities); by default glibc's per-thread heaps give that memory back after each tile and the next
// tile faults it in again, page by page, which cost 15-20 % of segment_nuclei's CPU time in worker threads
// (bench_nuclei_speed, 3 repetitions: 242 000 page faults, 116 000 with this set; benchmarks/README.md).
// Sets M_MMAP_THRESHOLD to 32 MiB (blocks up to that size come from the heaps, not from fresh mappings) and
// M_TOP_PAD to 64 MiB (a heap keeps that much free memory when it shrinks). Memory freed after a tile stays with the
// process: grade-slide's peak RSS with two worker threads grew by ~80 MB (70-150 MB; one thread: unchanged).
// Call it once, early, before starting threads.
bool tune_allocator();

}  // namespace grade

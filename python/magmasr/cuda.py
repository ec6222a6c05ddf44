"""The CUDA runtime: devices and the caching allocator (all functions raise RuntimeError without a GPU,
except is_available and device_count)."""
from ._core.cuda import (  # noqa: F401
    device_count,
    device_name,
    empty_cache,
    is_available,
    mem_get_info,
    memory_stats,
    synchronize,
)

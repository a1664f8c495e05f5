"""fsspec storage helpers (STUB: being implemented by the remote-storage helper).

    url_to_fs(url, **storage_options) -> (fs, path)
    is_remote(url) -> bool
    commit_file(local_path, url, **so) -> None      # atomic publish: visible only when complete
    write_bytes_atomic(url, data: bytes, **so) -> None
    read_bytes(url, **so) -> bytes
    exists(url, **so) -> bool ; file_size(url, **so) -> int ; remove(url, **so); makedirs(url, **so)
    sha256_file(url, **so) -> tuple[str, int]       # streaming hash, size
    mount_of(path) -> MountInfo(mountpoint, fstype, device) ; is_fuse_path(path) -> bool
"""

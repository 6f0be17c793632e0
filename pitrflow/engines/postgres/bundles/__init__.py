"""Repository layout v2: a base backup as independently compressed zstd frames.

Every object is a run of standalone zstd frames whose decompressed bytes,
joined, are a complete tar archive; a file index (index.json.zst) says
where each data-directory file's frames are, so a restore can fetch,
check and write them on several threads, and a delta restore can fetch
only the files that changed.
"""

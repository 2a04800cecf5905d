"""What tinyshake keeps on disk, without torch: names, paths, safe writes, run records and run locks."""

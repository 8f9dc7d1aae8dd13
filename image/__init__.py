"""The image builder's side of nsg: root filesystems, A/B disk images and signed upgrade bundles
(`make image`, `make bundle`). Runs on build machines; the box never imports it."""

"""ESP engines: userspace (TUN + UDP, for kernels without ESP) and kernel XFRM."""

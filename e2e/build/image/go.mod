// Packs a static binary into an image archive that containerd imports,
// with go-containerregistry, so the real node needs no registry.
module sre.space/e2e/build/image

go 1.26.0

require github.com/google/go-containerregistry v0.22.1

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)

// Command sre-image packs one binary into a single-layer image and writes it
// as an image archive (the `docker save` layout, which `ctr images import`
// reads), so the real node runs our own workloads without any registry.
//
//	sre-image -binary PATH -ref NAME:TAG [-ref NAME:TAG]... -out FILE [-arg ARG]... [-file PATH]...
//
// The binary becomes /NAME-OF-BINARY and the entrypoint; -arg sets the
// default arguments; every -ref names the same image. A dynamically linked
// binary needs its shared libraries and the dynamic loader: each -file is
// copied into the image at the same absolute path (symbolic links followed),
// as `ldd` lists them. Timestamps are fixed, so the same files always give
// the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type args []string

func (a *args) String() string     { return strings.Join(*a, " ") }
func (a *args) Set(v string) error { *a = append(*a, v); return nil }

func main() {
	binary := flag.String("binary", "", "the static binary to pack")
	out := flag.String("out", "", "where to write the image archive")
	var refs, cmd, files args
	flag.Var(&refs, "ref", "a name and tag of the image, e.g. sre.space/workload:e2e (repeatable)")
	flag.Var(&cmd, "arg", "a default argument (repeatable)")
	flag.Var(&files, "file", "an absolute path copied into the image at the same path, e.g. a shared library (repeatable)")
	flag.Parse()
	if *binary == "" || len(refs) == 0 || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := pack(*binary, refs, *out, cmd, files); err != nil {
		fmt.Fprintln(os.Stderr, "sre-image:", err)
		os.Exit(1)
	}
}

func pack(binary string, refs []string, out string, cmd []string, extra []string) error {
	content, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	path := "/" + filepath.Base(binary)
	files := []file{{path, content}}
	for _, p := range extra {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("-file %s: not an absolute path", p)
		}
		c, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, file{filepath.Clean(p), c})
	}
	layerTar, err := filesTar(files)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = runtime.GOARCH
	cfg.Config.Entrypoint = []string{path}
	cfg.Config.Cmd = cmd
	cfg.Config.Env = []string{"PATH=/"}
	cfg.Config.WorkingDir = "/"
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	tagged := map[name.Reference]v1.Image{}
	for _, ref := range refs {
		tag, err := name.NewTag(ref)
		if err != nil {
			return err
		}
		tagged[tag] = img
	}
	tmp := out + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, tagged); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Println(digest)
	return nil
}

type file struct {
	path    string
	content []byte
}

// filesTar is a layer holding the files (executable, with their parent
// folders), with a fixed modification time so that the layer's digest
// depends only on the files' paths and contents.
func filesTar(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		name := strings.TrimPrefix(f.path, "/")
		var parents []string
		for d := filepath.Dir(name); d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			hdr := &tar.Header{
				Name:     d + "/",
				Mode:     0o755,
				Typeflag: tar.TypeDir,
				ModTime:  time.Unix(0, 0),
				Format:   tar.FormatPAX,
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
		}
		hdr := &tar.Header{
			Name:     name,
			Mode:     0o755,
			Size:     int64(len(f.content)),
			Typeflag: tar.TypeReg,
			ModTime:  time.Unix(0, 0),
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.content); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

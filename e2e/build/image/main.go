// Command sre-image packs one binary into a single-layer image and writes it
// as an image archive (the `docker save` layout, which `ctr images import`
// reads), so the real node runs our own workloads without any registry.
//
//	sre-image -binary PATH -ref NAME:TAG [-ref NAME:TAG]... -out FILE [-arg ARG]... [-file PATH]...
//	          [-at PATH] [-file-at DEST=SOURCE]... [-user UID:GID] [-label KEY=VALUE]...
//
// The binary becomes /NAME-OF-BINARY (or -at PATH) and the entrypoint; -arg
// sets the default arguments; every -ref names the same image. A
// dynamically linked binary needs its shared libraries and the dynamic
// loader: each -file is copied into the image at the same absolute path
// (symbolic links followed), as `ldd` lists them; -file-at copies SOURCE to
// DEST. -user sets the user the image runs as, -label sets a label of the
// image's configuration (the OCI image spec's `org.opencontainers.image.*`
// keys, say). Timestamps are fixed, so the same files always give the same
// image digest.
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
	at := flag.String("at", "", "the binary's absolute path in the image (default /NAME-OF-BINARY)")
	user := flag.String("user", "", "the user (and group) the image runs as, e.g. 65532:65532")
	var refs, cmd, files, filesAt, labels args
	flag.Var(&refs, "ref", "a name and tag of the image, e.g. sre.space/workload:e2e (repeatable)")
	flag.Var(&cmd, "arg", "a default argument (repeatable)")
	flag.Var(&files, "file", "an absolute path copied into the image at the same path, e.g. a shared library (repeatable)")
	flag.Var(&filesAt, "file-at", "DEST=SOURCE: the file SOURCE copied into the image at the absolute path DEST (repeatable)")
	flag.Var(&labels, "label", "KEY=VALUE: a label of the image (repeatable)")
	flag.Parse()
	if *binary == "" || len(refs) == 0 || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	o := options{at: *at, user: *user, cmd: cmd, files: files, filesAt: filesAt, labels: labels}
	if err := pack(*binary, refs, *out, o); err != nil {
		fmt.Fprintln(os.Stderr, "sre-image:", err)
		os.Exit(1)
	}
}

// options are the optional flags.
type options struct {
	at, user            string
	cmd, files, filesAt []string
	labels              []string
}

func pack(binary string, refs []string, out string, o options) error {
	content, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	path := "/" + filepath.Base(binary)
	if o.at != "" {
		if !filepath.IsAbs(o.at) {
			return fmt.Errorf("-at %s: not an absolute path", o.at)
		}
		path = filepath.Clean(o.at)
	}
	files := []file{{path, content, 0o755}}
	for _, p := range o.files {
		o.filesAt = append(o.filesAt, p+"="+p)
	}
	for _, pair := range o.filesAt {
		dest, source, ok := strings.Cut(pair, "=")
		if !ok || !filepath.IsAbs(dest) || !filepath.IsAbs(source) {
			return fmt.Errorf("-file %s: want an absolute path (or DEST=SOURCE, both absolute)", pair)
		}
		info, err := os.Stat(source)
		if err != nil {
			return err
		}
		c, err := os.ReadFile(source)
		if err != nil {
			return err
		}
		// Executable files stay executable; the rest are readable by all.
		mode := int64(0o644)
		if info.Mode()&0o111 != 0 {
			mode = 0o755
		}
		files = append(files, file{filepath.Clean(dest), c, mode})
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
	cfg.Config.Cmd = o.cmd
	cfg.Config.User = o.user
	for _, l := range o.labels {
		key, value, ok := strings.Cut(l, "=")
		if !ok || key == "" {
			return fmt.Errorf("-label %s: want KEY=VALUE", l)
		}
		if cfg.Config.Labels == nil {
			cfg.Config.Labels = map[string]string{}
		}
		cfg.Config.Labels[key] = value
	}
	cfg.Config.Env = []string{"PATH=" + filepath.Dir(path)}
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
	mode    int64
}

// filesTar is a layer holding the files (with their parent folders), with a fixed modification time so that the layer's digest
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
			Mode:     f.mode,
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

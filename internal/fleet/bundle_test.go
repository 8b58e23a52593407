package fleet

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeBundle(t *testing.T) {
	big := `{"format":"ferry.bundle/v1","revision":1,"files":{"ferry.yaml":"` + strings.Repeat("#", 3000) + `"}}`
	for _, tc := range []struct {
		name, value string
		wantErr     string
	}{
		{"good", `{"format":"ferry.bundle/v1","revision":3,"comment":"x","files":{"ferry.yaml":"devices: []\n","devices.d/a.yml":""}}`, ""},
		{"oversize", big, "over the limit of 2048"},
		{"unknown member", `{"format":"ferry.bundle/v1","revision":1,"files":{"ferry.yaml":""},"data_dir":"/"}`, `unknown field "data_dir"`},
		{"not json", `format: ferry.bundle/v1`, "invalid character"},
		{"trailing", `{"format":"ferry.bundle/v1","revision":1,"files":{"ferry.yaml":""}} {}`, "data after"},
		{"format", `{"format":"tar","revision":1,"files":{"ferry.yaml":""}}`, `format "tar"`},
		{"no revision", `{"format":"ferry.bundle/v1","files":{"ferry.yaml":""}}`, "revision is required"},
		{"no files", `{"format":"ferry.bundle/v1","revision":1,"files":{}}`, "files is empty"},
		{"dotdot", `{"format":"ferry.bundle/v1","revision":1,"files":{"../etc/ferry.yaml":""}}`, "relative path"},
		{"absolute", `{"format":"ferry.bundle/v1","revision":1,"files":{"/etc/x.yaml":""}}`, "relative path"},
		{"hidden", `{"format":"ferry.bundle/v1","revision":1,"files":{".site-ferry.yaml":""}}`, "relative path"},
		{"not yaml", `{"format":"ferry.bundle/v1","revision":1,"files":{"creds.txt":""}}`, "relative path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeBundle([]byte(tc.value), 2048)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrBundle) {
				t.Fatalf("err = %v, want %q wrapping ErrBundle", err, tc.wantErr)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	gw := &Bundle{Revision: 4, Files: map[string]string{"ferry.yaml": "g", "d/a.yaml": "ga"}}
	site := &Bundle{Revision: 2, Files: map[string]string{"ferry.yaml": "s", "d/a.yaml": "sa", "d/b.yaml": "sb"}}
	m, err := Merge(gw, site)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ferry.yaml": "g", SiteMainFile: "s", "d/a.yaml": "ga", "d/b.yaml": "sb"}
	if len(m.Files) != len(want) || m.Revision != 4 || m.SiteRevision != 2 {
		t.Fatalf("merged %+v", m)
	}
	for n, f := range want {
		if m.Files[n] != f {
			t.Errorf("%s = %q, want %q", n, m.Files[n], f)
		}
	}
	m2, _ := Merge(gw, &Bundle{Revision: 3, Files: map[string]string{"ferry.yaml": "s", "d/a.yaml": "sa", "d/b.yaml": "sb2"}})
	if m2.Hash == m.Hash {
		t.Error("a changed site file left the hash unchanged")
	}
	if _, err := Merge(&Bundle{Revision: 1, Files: map[string]string{"d/a.yaml": ""}}, nil); !errors.Is(err, ErrBundle) {
		t.Errorf("no main file: err = %v", err)
	}
	if m, err := Merge(nil, nil); m != nil || err != nil {
		t.Errorf("nothing: %v %v", m, err)
	}
}

func TestStatusStale(t *testing.T) {
	now := time.Now()
	st := Status{Time: now.Add(-25 * time.Second), Heartbeat: 10}
	if st.Stale(now) {
		t.Error("25s after a write with a 10s heartbeat: stale")
	}
	st.Time = now.Add(-31 * time.Second)
	if !st.Stale(now) {
		t.Error("31s after a write with a 10s heartbeat: not stale")
	}
}

package opcua

import (
	"testing"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// FuzzDecodeService feeds server messages (type id and body, as the
// secure channel hands them over) to the patched gopcua decoder: it may
// refuse them but must neither panic nor allocate without bound. Seeds:
// a valid ReadResponse, a valid BrowseResponse and the hostile cases.
func FuzzDecodeService(f *testing.F) {
	for _, seed := range decodeSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = ua.DecodeService(b)
	})
}

// FuzzDecodeDataValue feeds single DataValues (the Variant decoder and
// everything it nests) to the decoder.
func FuzzDecodeDataValue(f *testing.F) {
	for _, v := range []any{int32(-7), 2.5, "text", []int32{1, 2, 3}, [][]float64{{1, 2}, {3, 4}}, ua.MustVariant(int16(3)), &ua.LocalizedText{Text: "x"}} {
		b, err := (&ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(v)}).Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, tc := range hostileCases() {
		b := fuzzSized(tc.body)
		f.Add(b[len(b)-4-len(b)/2:]) // a tail: the crafted value among other bytes
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = new(ua.DataValue).Decode(b)
	})
}

func decodeSeeds(f *testing.F) [][]byte {
	f.Helper()
	var seeds [][]byte
	for typ, v := range map[uint16]any{
		id.ReadResponse_Encoding_DefaultBinary: &ua.ReadResponse{ResponseHeader: &ua.ResponseHeader{ServiceDiagnostics: &ua.DiagnosticInfo{}, AdditionalHeader: ua.NewExtensionObject(nil)},
			Results: []*ua.DataValue{{EncodingMask: ua.DataValueValue, Value: ua.MustVariant([]float64{1, 2})}, {EncodingMask: ua.DataValueStatusCode, Status: ua.StatusBadNodeIDUnknown}}},
		id.BrowseResponse_Encoding_DefaultBinary: &ua.BrowseResponse{ResponseHeader: &ua.ResponseHeader{ServiceDiagnostics: &ua.DiagnosticInfo{}, AdditionalHeader: ua.NewExtensionObject(nil)},
			Results: []*ua.BrowseResult{{References: []*ua.ReferenceDescription{{ReferenceTypeID: ua.NewNumericNodeID(0, 35), NodeID: ua.NewNumericExpandedNodeID(2, 7),
				BrowseName: &ua.QualifiedName{Name: "n"}, DisplayName: &ua.LocalizedText{Text: "n"}, TypeDefinition: ua.NewNumericExpandedNodeID(0, 63)}}}}},
	} {
		t, err := ua.NewFourByteExpandedNodeID(0, typ).Encode()
		if err != nil {
			f.Fatal(err)
		}
		b, err := ua.Encode(v)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, append(t, b...))
	}
	for _, tc := range hostileCases() {
		seeds = append(seeds, fuzzSized(tc.body))
	}
	return seeds
}

// fuzzSized cuts the 200000-deep nesting cases to 400 levels (still past
// ua.MaxDecodeDepth, and truncated input is refused like a deep one):
// seeds of 200 kB make the fuzzer spend its time minimising them.
func fuzzSized(b []byte) []byte {
	if len(b) <= 400 {
		return b
	}
	return b[:400]
}

package ferry

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestAlertJSONValues(t *testing.T) {
	for _, tc := range []struct {
		v    Value
		want string
	}{
		{Value{}, `null`},
		{FloatValue(1.5), `1.5`},
		{IntValue(-3), `-3`},
		{BoolValue(true), `true`},
		{StringValue("E1"), `"E1"`},
		{FloatValue(math.Inf(1)), `"+Inf"`},
		{FloatValue(math.NaN()), `"NaN"`},
	} {
		a := Alert{ID: "r-1", Rule: "r", Value: tc.v}
		b, err := json.Marshal(NewAlertJSON(a, "gw1"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"value":`+tc.want) || !strings.Contains(string(b), `"gateway":"gw1"`) {
			t.Errorf("%v: %s", tc.v, b)
		}
	}
}

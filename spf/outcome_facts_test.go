package spf

import "testing"

func TestOutcomeLookedUp(t *testing.T) {
	tests := []struct {
		name string
		o    Outcome
		want bool
	}{
		{"nothing asked", Outcome{Result: None}, false},
		{"a record found", Outcome{Result: Pass, Record: "v=spf1 -all"}, true},
		{"asked, none found", Outcome{Result: None, Trace: []Step{{Kind: StepRecord, Domain: "example.org"}}}, true},
		{"other steps only", Outcome{Result: None, Trace: []Step{{Kind: StepTerm}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.o.LookedUp(); got != tt.want {
				t.Errorf("LookedUp() = %v, want %v", got, tt.want)
			}
		})
	}
}

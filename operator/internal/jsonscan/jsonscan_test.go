package jsonscan

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestValues(t *testing.T) {
	f := func(doc string, want int) {
		t.Helper()
		if !json.Valid([]byte(doc)) {
			t.Fatalf("%q is not JSON", doc)
		}
		got, err := Values([]byte(doc), 1000)
		if err != nil || got != want {
			t.Errorf("Values(%q) = %d, %v; want %d", doc, got, err, want)
		}
	}
	f(`0`, 1)
	f(`"a,b{c[d"`, 1)       // structure inside a string is text
	f(`"a\"{,"`, 1)         // an escaped quote does not end the string
	f(`"a\\"`, 1)           // an escaped backslash does not escape the quote
	f(`{}`, 2)              // the document and its object
	f(`[1,2,3]`, 4)         // the array and two more elements
	f(`{"a":{"b":[1]}}`, 4) // object, object, array
	f(`[{},{},{}]`, 7)      // the document, the array, three objects, two commas
	f(`{"k":"v","k2":"{[,"}`, 3)
}

func TestValuesStopsAtMax(t *testing.T) {
	doc := "[" + strings.Repeat("{},", 1<<20) + "{}]"
	n, err := Values([]byte(doc), 100)
	var tm *TooManyError
	if !errors.As(err, &tm) || tm.Max != 100 || n != 101 {
		t.Fatalf("Values(2M empty objects, 100) = %d, %v; want 101 and a TooManyError with Max 100", n, err)
	}
	if err.Error() != "more than 100 JSON values" {
		t.Errorf("error %q", err)
	}
}

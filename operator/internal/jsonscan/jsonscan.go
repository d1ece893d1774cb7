// Package jsonscan measures what decoding a JSON document will cost before
// it is decoded. The operator decodes answers it cannot trust (a subject's
// API, a Prometheus, a model provider) into generic values, where every
// element costs far more than its bytes: `{},` is 3 bytes of input and
// about 130 bytes of map, interface and slice once decoded. Counting the
// values first, with no allocation, lets a caller refuse such a document
// at the cost of reading it. It must not decode anything itself.
package jsonscan

import "fmt"

// TooManyError is a document with more values than the caller allows.
type TooManyError struct {
	Max int // the budget that was exceeded
}

func (e *TooManyError) Error() string {
	return fmt.Sprintf("more than %d JSON values", e.Max)
}

// Values counts the values of data, stopping with a *TooManyError as soon
// as the count exceeds max. A value is a container or a member or element
// of one: outside strings, every '{', '[' and ',' counts one, plus one for
// the document, so the count bounds the maps, slices, map entries and
// boxed scalars a decoder into `any` makes (an object's key is counted
// with its member). It does not check that data is valid JSON: the decoder
// that runs afterwards does, on a document now known to be small.
func Values(data []byte, max int) (int, error) {
	n := 1
	inString, escaped := false, false
	for _, c := range data {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[', ',':
			n++
			if n > max {
				return n, &TooManyError{Max: max}
			}
		}
	}
	return n, nil
}

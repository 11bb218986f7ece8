package protocol

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Stored records (sessions, sender keys) use the field layout of
// libsignal's storage.proto (the SPQR state inside a session keeps its
// decapsulation key in seed form, which libsignal does not read). These
// helpers walk one protobuf message at a time.

// walk calls fn for every field of a message, with its varint value or
// its bytes. A malformed message is an error; fixed-width fields other than
// fixed64 are refused (no record uses them).
func walk(b []byte, fn func(n protowire.Number, v uint64, bs []byte, isBytes bool) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: bad record tag", ErrInvalidState)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: bad record varint", ErrInvalidState)
			}
			b = b[n:]
			if err := fn(num, v, nil, false); err != nil {
				return err
			}
		case protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return fmt.Errorf("%w: bad record fixed64", ErrInvalidState)
			}
			b = b[n:]
			if err := fn(num, v, nil, false); err != nil {
				return err
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: bad record bytes", ErrInvalidState)
			}
			b = b[n:]
			if err := fn(num, 0, v, true); err != nil {
				return err
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: bad record field", ErrInvalidState)
			}
			b = b[n:]
		}
	}
	return nil
}

// appendNonZero appends a proto3 varint field unless it is zero.
func appendNonZero(b []byte, n protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, n, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// appendNonEmpty appends a proto3 bytes field unless it is empty.
func appendNonEmpty(b []byte, n protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return appendBytesField(b, n, v)
}

func copyKey32(dst *[32]byte, v []byte, what string) error {
	if len(v) != 32 {
		return fmt.Errorf("%w: %s is %d bytes", ErrInvalidState, what, len(v))
	}
	copy(dst[:], v)
	return nil
}

func u32(v uint64, what string) (uint32, error) {
	if v > 0xFFFFFFFF {
		return 0, fmt.Errorf("%w: %s out of range", ErrInvalidState, what)
	}
	return uint32(v), nil
}

package protocol

import (
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Address names one device of one account: the account's name (for
// Signal-compatible peers, a service id: an ACI UUID string, or "PNI:" and
// a UUID) and the device id.
type Address struct {
	Name     string
	DeviceID uint32
}

// String is "name.device", the form libsignal prints.
func (a Address) String() string { return a.Name + "." + strconv.FormatUint(uint64(a.DeviceID), 10) }

// serviceIDBinary is libsignal's fixed-width binary form of a service id: a
// kind byte (0 ACI, 1 PNI) and the 16 bytes of the UUID.
func serviceIDBinary(name string) ([]byte, bool) {
	kind := byte(0)
	if rest, ok := strings.CutPrefix(name, "PNI:"); ok {
		kind, name = 1, rest
	}
	if len(name) != 36 { // only the hyphenated form, as libsignal parses it
		return nil, false
	}
	id, err := uuid.Parse(name)
	if err != nil {
		return nil, false
	}
	return append([]byte{kind}, id[:]...), true
}

// addressesBinding is the value of a SignalMessage's addresses field: the
// sender's and recipient's service ids and device ids. It is absent when
// either name is not a service id or a device id does not fit a byte.
func addressesBinding(sender, recipient Address) []byte {
	s, ok1 := serviceIDBinary(sender.Name)
	r, ok2 := serviceIDBinary(recipient.Name)
	if !ok1 || !ok2 || sender.DeviceID > 255 || recipient.DeviceID > 255 {
		return nil
	}
	b := make([]byte, 0, 36)
	b = append(b, s...)
	b = append(b, byte(sender.DeviceID))
	b = append(b, r...)
	b = append(b, byte(recipient.DeviceID))
	return b
}

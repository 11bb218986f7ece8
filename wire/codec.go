package wire

import "github.com/go-json-experiment/json"

// Encode is the JSON of a frame (a Frame or ProvisioningFrame) as it
// travels on a socket. The relay, parley and the load generator all encode
// and decode frames here, with one JSON library: encoding/json spent about
// a third of the generator's CPU on frames, compacting Body again among
// other things.
func Encode(f any) ([]byte, error) { return json.Marshal(f) }

// Decode reads a frame into f. strict refuses members the frame type does
// not have (the relay is strict with what clients send); clients decode
// leniently, so a newer relay may add members.
func Decode(data []byte, f any, strict bool) error {
	return json.Unmarshal(data, f, json.RejectUnknownMembers(strict))
}

// Wrapper module: builds lnd, lncli, btcd and btcctl at the versions lnd is tested with.
// lnd's own go.mod has replace directives, so `go install lnd@version` refuses; a
// wrapper that requires lnd and repeats them builds it the ordinary way.
module bitcache.local/regtest/tools

go 1.25.10

require github.com/lightningnetwork/lnd v0.21.2-beta

require github.com/btcsuite/btcd v0.25.1-0.20260310163610-1c55c7c18179 // indirect

replace github.com/ulikunitz/xz => github.com/ulikunitz/xz v0.5.11

replace github.com/gogo/protobuf => github.com/gogo/protobuf v1.3.2

// lnrpc calls UseHexForBytes, which only this fork of protobuf-go has.
replace google.golang.org/protobuf => github.com/lightninglabs/protobuf-go-hex-display v1.33.0-hex-display

# Parley — build, run and test. Needs only Go (see go.mod) and, for the
# PostgreSQL tests, Debian's postgresql package (scripts/with-postgres
# installs it with apt-get when run as root and it is missing).

GO        ?= go
BIN       := bin
LISTEN    ?= 127.0.0.1:8080
DATA_DIR  ?= data
# Test numbers for local use: verified with code 123456, never sent SMS.
# (…0100 and …0101 for the README's chat, …0102 and …0103 for scripts/walkthrough.)
RUN_FLAGS ?= --test-number +15555550100=123456 --test-number +15555550101=123456 \
	--test-number +15555550102=123456 --test-number +15555550103=123456 --log-format text
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build run test test-short test-deploy bench lint fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...

# Sealed sender is on: a development trust root and server certificate are
# made in DATA_DIR the first time (a production trust root stays offline:
# deploy/README.md).
run: build
	@mkdir -p $(DATA_DIR)
	@test -f $(DATA_DIR)/sender-certificate.json || { \
		$(BIN)/parleyd trust-root --out $(DATA_DIR)/trust-root.json >/dev/null && \
		$(BIN)/parleyd server-certificate --trust-root $(DATA_DIR)/trust-root.json --key-id 1 \
			--out $(DATA_DIR)/sender-certificate.json; }
	$(BIN)/parleyd serve --listen $(LISTEN) --data-dir $(DATA_DIR) \
		--sender-certificate-file $(DATA_DIR)/sender-certificate.json $(RUN_FLAGS)

# Every test, both storage backends: PostgreSQL is started by scripts/with-postgres;
# scripts/with-strace installs strace for the test that counts parleyd's fsyncs;
# scripts/with-pebble builds Pebble, the ACME server parleyd gets certificates from.
test:
	$(GO) vet ./...
	scripts/with-postgres scripts/with-s3 scripts/with-libsignal scripts/with-signal-sdk scripts/with-http-ece scripts/with-strace scripts/with-redocly scripts/with-pebble $(GO) test -race -count=1 ./...
	cd deploy/validate && ../../scripts/with-haproxy $(GO) test -count=1 ./...

# The real images and compose topology (needs root: a private Docker engine
# that is removed afterwards; see scripts/test-deploy).
test-deploy:
	GO=$(GO) scripts/test-deploy

# Without PostgreSQL (its tests skip).
test-short:
	$(GO) test -count=1 ./...

# Figures, not pass/fail: storage benchmarks, the load generator on SQLite
# (synchronous=full, the default, and the normal opt-in) and on PostgreSQL
# with fsync on, memory per idle connection, then the same scenario on
# mosquitto and NATS JetStream and one side-by-side table (scripts/bench).
bench:
	GO=$(GO) scripts/bench

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cd bench/peers && $(GO) vet ./...

# Run each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./phone
	$(GO) test -run='^$$' -fuzz=FuzzVerify -fuzztime=$(FUZZTIME) ./keys
	$(GO) test -run='^$$' -fuzz='^FuzzRequests$$' -fuzztime=$(FUZZTIME) ./api
	$(GO) test -run='^$$' -fuzz=FuzzRequestFrames -fuzztime=$(FUZZTIME) ./api
	$(GO) test -run='^$$' -fuzz=FuzzSocketBytes -fuzztime=$(FUZZTIME) ./api
	$(GO) test -run='^$$' -fuzz='^FuzzSealedRequests$$' -fuzztime=$(FUZZTIME) ./api
	$(GO) test -run='^$$' -fuzz=FuzzParseEvent -fuzztime=$(FUZZTIME) ./relay
	$(GO) test -run='^$$' -fuzz=FuzzUnmarshal -fuzztime=$(FUZZTIME) ./cli/content
	$(GO) test -run='^$$' -fuzz=FuzzEnvelope -fuzztime=$(FUZZTIME) ./cli
	$(GO) test -run='^$$' -fuzz=FuzzRequestLines -fuzztime=$(FUZZTIME) ./cli/rpc
	$(GO) test -run='^$$' -fuzz=FuzzDecrypt -fuzztime=$(FUZZTIME) ./cli/attachment
	$(GO) test -run='^$$' -fuzz=FuzzObjectURL -fuzztime=$(FUZZTIME) ./attachments
	$(GO) test -run='^$$' -fuzz=FuzzParseServerKey -fuzztime=$(FUZZTIME) ./sealedsender
	$(GO) test -run='^$$' -fuzz='^FuzzParseSignalMessage$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzParsePreKeySignalMessage$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzParseSenderKeyMessage$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzParseSenderKeyDistributionMessage$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzParseSessionRecord$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzParseSenderKeyRecord$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzDecrypt$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzUnseal$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzParseSenderCertificate$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzParseMultiRecipientMessage$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol
	$(GO) test -run='^$$' -fuzz='^FuzzRecv$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol/spqr
	$(GO) test -run='^$$' -fuzz='^FuzzState$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s ./protocol/spqr

clean:
	rm -rf $(BIN)

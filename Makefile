.PHONY: test lint bench demo fuzz

test:
	go test -race -count=1 ./...

lint:
	go vet ./...
	go run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0 run

bench:
	go test -run '^$$' -bench . -benchmem ./...

fuzz:
	go test ./messages -run '^$$' -fuzz FuzzDecode -fuzztime 60s

demo:
	go run ./cmd/jetflow demo

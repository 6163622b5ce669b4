// Command vsphere-lab is mover's vSphere lab: VMware's vcsim simulator (govmomi's simulator
// package) extended with Changed Block Tracking, point-in-time snapshot images on layered
// disks, an authenticated /folder endpoint, fault injection and a JSON control API.
// See docs/lab.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"crypto/tls"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
)

func main() {
	dir := flag.String("dir", "", "state directory: datastores and lab.json go here (required)")
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: pick a free one)")
	user := flag.String("user", "user", "the only user name Login accepts")
	password := flag.String("password", "pass", "the only password Login accepts")
	useTLS := flag.Bool("tls", false, "serve HTTPS with a fresh self-signed certificate")
	flag.Parse()
	if *dir == "" {
		log.Fatal("--dir is required")
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	dsRoot := filepath.Join(*dir, "datastores")
	if err := os.MkdirAll(dsRoot, 0o755); err != nil {
		log.Fatal(err)
	}
	// vcsim puts each local datastore in a fresh temporary directory; point those at the
	// state directory so datastore files live (and are measured) there.
	os.Setenv("TMPDIR", dsRoot)

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	svc := model.Service
	// vcsim's Login accepts only this pair when Listen.User is not its DefaultLogin.
	svc.Listen = &url.URL{User: url.UserPassword(*user, *password)}
	svc.RegisterSDK(simulator.Map)

	client, err := vim25.NewClient(context.Background(), svc)
	if err != nil {
		log.Fatal(err)
	}
	lab := &Lab{svc: svc, client: client, user: *user, password: *password,
		dc: "DC0", dsName: "LocalDS_0", cfg: defaultConfig(),
		vms: map[string]*labVM{}, byRef: map[string]*labVM{}}
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		if ds.Name == lab.dsName {
			lab.dsRef = ds.Self
			lab.root = ds.Info.GetDatastoreInfo().Url
		}
	}
	if lab.root == "" {
		log.Fatalf("datastore %s not found", lab.dsName)
	}
	if err := lab.buildTopology(dsRoot); err != nil {
		log.Fatal(err)
	}
	lab.indexDatastores()
	if err := lab.adoptInventory(); err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/sdk", lab.serveSOAP)
	mux.HandleFunc("/sdk/vimServiceVersions.xml", svc.ServiceVersions)
	mux.HandleFunc(folderPrefix, lab.serveFolder)
	mux.HandleFunc("/lab/", lab.serveControl)
	mux.HandleFunc("/lab/layers", lab.serveLayers) // scripts/vddk-standin: delta chains
	mux.HandleFunc("/about", svc.About)

	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		log.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	var tlsInfo map[string]interface{}
	simulator.Map.SessionManager().ServiceHostName = addr.String()
	scheme := "http"
	if *useTLS {
		scheme = "https"
		cert, thumbprint, err := selfSigned(*dir)
		if err != nil {
			log.Fatal(err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
		tlsInfo = map[string]interface{}{"thumbprint": thumbprint,
			"cert": filepath.Join(*dir, "cert.pem")}
	}
	info := map[string]interface{}{
		"url":      fmt.Sprintf("%s://%s/sdk", scheme, addr),
		"control":  fmt.Sprintf("%s://%s/lab", scheme, addr),
		"port":     addr.Port,
		"pid":      os.Getpid(),
		"user":     *user,
		"password": *password,
		"dir":      *dir,
	}
	for k, v := range tlsInfo {
		info[k] = v
	}
	b, _ := json.Marshal(info)
	// Write atomically: the launcher polls for this file.
	tmp := filepath.Join(*dir, "lab.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(*dir, "lab.json")); err != nil {
		log.Fatal(err)
	}
	log.Printf("vsphere-lab listening on %s (datastore %s in %s)", addr, lab.dsName, lab.root)

	srv := &http.Server{Handler: mux}
	done := make(chan struct{})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		log.Printf("shutting down")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		close(done)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
	<-done
	os.Remove(filepath.Join(*dir, "lab.json"))
}

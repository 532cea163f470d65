package io.camundarelay.engine;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;

/**
 * The Camunda 7 engine with its REST API at {@code /engine-rest} and the webapps
 * (Cockpit, Tasklist, Admin). Process models under {@code processes/} are deployed at start;
 * unchanged models are not redeployed.
 */
@SpringBootApplication
public class EngineApplication {

  public static void main(String[] args) {
    SpringApplication.run(EngineApplication.class, args);
  }
}
